// tzero console: polls the /v1 API every POLL_MS and draws each relationship's control bitmap
// as a heat map. Plain browser JavaScript, no build step, nothing loaded from elsewhere.
//
// The token is typed once and kept in sessionStorage (this tab only); it travels only in the
// Authorization header of same-origin requests, never in a URL. Every action is one API call:
// the page checks no FlashCopy rule itself, so a refusal shows the API's own message and code.
"use strict";

const POLL_MS = 500;
const TOKEN_KEY = "tzero.token";
// Heat map colours, as in console.css (--uncopied, --copied), and the ramp's middle.
const UNCOPIED = [228, 87, 46];
const MIDDLE = [233, 185, 73];
const COPIED = [31, 157, 107];
// Copy speed and ETA come from the change in out-of-sync tracks over this window.
const RATE_WINDOW_MS = 4000;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  volumes: [],
  flashes: [],
  bitmaps: new Map(), // "src:tgt" -> {mini, big}
  samples: new Map(), // "src:tgt" -> [{t, oos, cow}]
  selected: null,
  volumeNames: "",
  pollError: null, // the message the last failed poll put up, cleared when polls succeed
  timer: null,
  inFlight: false, // one poll at a time; a poll asked for meanwhile runs right after
  again: false,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- API -------------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", "the daemon does not answer (" + e.message + ")");
  }
  const text = await resp.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ApiError(resp.status, "bad_response", "not JSON: " + text.slice(0, 200));
    }
  }
  if (!resp.ok) {
    const err = (json && json.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status, err.message || resp.statusText);
  }
  return json;
}

const pairPath = (f) =>
  "/v1/flash/" + encodeURIComponent(f.source) + "/" + encodeURIComponent(f.target);
const keyOf = (f) => f.source + ":" + f.target;

// ---- formatting --------------------------------------------------------------------------------

function fmtBytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n.toFixed(0) : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)) + " " + units[i];
}

function fmtDuration(s) {
  if (!isFinite(s) || s < 0) return "—";
  s = Math.ceil(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function fmtPct(copied, total) {
  if (!total) return "100.0%";
  const p = (100 * copied) / total;
  // Never round an unfinished copy up to 100%.
  return (copied < total ? Math.min(p, 99.9) : 100).toFixed(1) + "%";
}

// "64MiB", "8 M", "1048576", "0": bytes per second (binary units, as the CLI).
function parseRate(text) {
  const t = text.trim().replace(/\/s$/i, "");
  if (t === "") return 0;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(t);
  if (!m || (m[3] && m[3].toLowerCase() === "b" && m[2])) {
    throw new ApiError(0, "invalid_rate", "rate '" + text + "': give bytes per second, e.g. 64MiB or 1048576");
  }
  const mult = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40, p: 2 ** 50 }[m[2].toLowerCase()];
  return Math.round(parseFloat(m[1]) * mult);
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// ---- messages --------------------------------------------------------------------------------

function showMessage(kind, text, err) {
  const m = $("message");
  m.className = "message " + kind;
  m.replaceChildren(el("span", { class: "text" }, text));
  if (err) {
    const where = err.status ? " · HTTP " + err.status : "";
    m.append(el("span", { class: "code" }, err.code + where));
    m.dataset.code = err.code;
    m.dataset.status = String(err.status || 0);
  } else {
    delete m.dataset.code;
    delete m.dataset.status;
  }
  m.hidden = false;
}

function showError(err) {
  showMessage("error", err.message, err);
}

function setConn(ok, text) {
  const c = $("conn");
  c.className = "conn " + (ok ? "on" : "off");
  c.textContent = text;
}

// ---- heat maps -------------------------------------------------------------------------------

function mix(a, b, f) {
  return [0, 1, 2].map((i) => Math.round(a[i] + (b[i] - a[i]) * f));
}

// Share copied (0..1) to colour: exactly UNCOPIED at 0 and COPIED at 1, so the two ends can be
// told apart by their pixels.
function colour(f) {
  if (f <= 0) return UNCOPIED;
  if (f >= 1) return COPIED;
  return f < 0.5 ? mix(UNCOPIED, MIDDLE, f * 2) : mix(MIDDLE, COPIED, (f - 0.5) * 2);
}

// Buckets to ask for: one per device pixel of the canvas (its CSS width before it is laid out).
function bucketsFor(canvas, cssWidth) {
  const w = canvas.clientWidth || cssWidth;
  return Math.max(1, Math.round(w * (window.devicePixelRatio || 1)));
}

// Draws `bm` (the API's FlashBitmap) on `canvas`, one column per bucket spread over the device
// pixels, and records what it drew in data attributes (data-copied, data-total, ...).
function drawMap(canvas, bm) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(w, h);
  const px = img.data;
  const n = bm.buckets.length;
  const total = bm.total_tracks;
  let full = 0;
  for (let i = 0; i < n; i++) {
    const lo = Math.floor((i * total) / n);
    const hi = Math.floor(((i + 1) * total) / n);
    const covered = Math.max(1, hi - lo);
    const copied = bm.buckets[i];
    if (copied >= covered) full++;
    const c = colour(copied / covered);
    const x0 = Math.floor((i * w) / n);
    const x1 = Math.max(x0 + 1, Math.floor(((i + 1) * w) / n));
    for (let x = x0; x < x1 && x < w; x++) {
      for (let y = 0; y < h; y++) {
        const o = (y * w + x) * 4;
        px[o] = c[0];
        px[o + 1] = c[1];
        px[o + 2] = c[2];
        px[o + 3] = 255;
      }
    }
  }
  ctx.putImageData(img, 0, 0);
  canvas.dataset.total = String(total);
  canvas.dataset.copied = String(bm.copied_tracks);
  canvas.dataset.buckets = String(n);
  canvas.dataset.fullBuckets = String(full);
  canvas.title = bm.copied_tracks + " of " + total + " tracks copied";
}

// ---- polling ---------------------------------------------------------------------------------

// Keeps the samples of the last RATE_WINDOW_MS; a rise in out-of-sync tracks (a resync) starts
// the window afresh. Returns tracks copied per second and copy-on-write tracks per second.
function rates(f, now) {
  const key = keyOf(f);
  let s = state.samples.get(key) || [];
  const oos = f.out_of_sync_tracks;
  const cow = f.cow_tracks ?? 0;
  if (s.length && oos > s[s.length - 1].oos) s = [];
  s.push({ t: now, oos, cow });
  while (s.length > 2 && now - s[0].t > RATE_WINDOW_MS) s.shift();
  state.samples.set(key, s);
  if (s.length < 2) return { copy: null, cow: null };
  const dt = (s[s.length - 1].t - s[0].t) / 1000;
  if (dt <= 0) return { copy: null, cow: null };
  return { copy: (s[0].oos - oos) / dt, cow: Math.max(0, cow - s[0].cow) / dt };
}

async function poll() {
  clearTimeout(state.timer);
  if (state.inFlight) {
    state.again = true;
    return;
  }
  state.inFlight = true;
  try {
    await pollOnce();
  } finally {
    state.inFlight = false;
  }
  if (state.again) {
    state.again = false;
    poll();
  } else if (state.token) {
    state.timer = setTimeout(poll, POLL_MS);
  }
}

async function pollOnce() {
  if (!state.token) {
    setConn(false, "no token");
    render();
    return;
  }
  try {
    const [volumes, flashes] = await Promise.all([api("GET", "/v1/volumes"), api("GET", "/v1/flash")]);
    const wanted = new Map();
    for (const f of flashes) wanted.set(keyOf(f), f);
    const maps = await Promise.all(
      flashes.map(async (f) => {
        const key = keyOf(f);
        const mini = miniCanvas(key);
        const got = { mini: await api("GET", pairPath(f) + "/bitmap?buckets=" + bucketsFor(mini, 260)) };
        if (key === state.selected && !$("detail").hidden) {
          got.big = await api("GET", pairPath(f) + "/bitmap?buckets=" + bucketsFor($("detail-map"), 1200));
        }
        return [key, got];
      }),
    );
    state.volumes = volumes;
    state.flashes = flashes;
    state.bitmaps = new Map(maps);
    for (const key of state.samples.keys()) if (!wanted.has(key)) state.samples.delete(key);
    const now = performance.now();
    for (const f of flashes) f._rates = rates(f, now);
    setConn(true, "connected");
    if (state.pollError && $("message").dataset.code === state.pollError) $("message").hidden = true;
    state.pollError = null;
  } catch (e) {
    // A relationship withdrawn between the list and its bitmap: the next poll settles it.
    if (e.code !== "relationship_not_found" && e.code !== "volume_not_found") {
      setConn(false, e.status === 401 ? "bad token" : "error");
      if (state.pollError !== e.code) showError(e);
      state.pollError = e.code;
    }
  }
  render();
}

// ---- rendering -------------------------------------------------------------------------------

const miniCanvases = new Map();
function miniCanvas(key) {
  let c = miniCanvases.get(key);
  if (!c) {
    c = el("canvas", { class: "heatmap mini" });
    c.height = 16;
    miniCanvases.set(key, c);
  }
  return c;
}

function badge(text, cls) {
  return el("span", { class: "badge " + cls }, text);
}

function render() {
  renderSummary();
  renderFlashes();
  renderDetail();
  renderGroups();
  renderVolumes();
  renderPairChoices();
}

function renderSummary() {
  const fl = state.flashes;
  const copying = fl.filter((f) => f.state === "copying").length;
  const owed = fl.reduce((a, f) => a + f.out_of_sync_tracks * f.track_size, 0);
  const item = (n, label) => el("span", {}, el("b", {}, String(n)), label);
  $("summary").replaceChildren(
    item(state.volumes.length, "volumes"),
    item(fl.length, "relationships"),
    item(copying, "copying"),
    item(fmtBytes(owed), "to copy"),
  );
}

function flashRow(f) {
  const key = keyOf(f);
  const total = f.total_tracks;
  const copied = total - f.out_of_sync_tracks;
  const r = f._rates || {};
  const opts = el("span", {});
  opts.append(el("span", { class: "tag" }, f.background_copy ? "COPY" : "NOCOPY"));
  if (f.persistent) opts.append(el("span", { class: "tag" }, "persist"));
  if (f.recording) opts.append(el("span", { class: "tag" }, "record"));
  if (f.target_write_inhibit) opts.append(el("span", { class: "tag" }, "tgt inhibit"));
  if (f.withdraw_pending) opts.append(el("span", { class: "tag" }, "withdraw at end"));
  if (f.revert_pending) opts.append(el("span", { class: "tag" }, "revert pending"));
  let speed = "—";
  let eta = "—";
  if (f.state === "copied") eta = "done";
  else if (f.state === "copying" && r.copy !== null && r.copy !== undefined) {
    speed = fmtBytes(Math.max(0, r.copy) * f.track_size) + "/s";
    eta = r.copy > 0 ? fmtDuration(f.out_of_sync_tracks / r.copy) : "stalled";
  }
  // cow_tracks / cow_bytes are newer fields: a daemon without them shows "—", not a false 0.
  const cowTracks = f.cow_tracks ?? 0;
  const cow = el("span", {});
  if (f.cow_tracks === undefined && f.cow_bytes === undefined) {
    cow.append(el("span", { class: "muted", title: "this daemon reports no copy-on-write counters" }, "—"));
  } else {
    cow.append(fmtBytes(f.cow_bytes ?? 0) + " ", el("span", { class: "muted" }, "(" + cowTracks + " tr)"));
  }
  if (r.cow) cow.append(el("span", { class: "muted" }, " +" + r.cow.toFixed(0) + "/s"));
  const bar = el("span", { class: "bar" }, el("i", {}));
  bar.firstChild.style.width = ((100 * copied) / Math.max(1, total)).toFixed(2) + "%";
  const tr = el(
    "tr",
    {
      "data-key": key,
      "data-source": f.source,
      "data-target": f.target,
      "data-state": f.state,
      "data-out-of-sync": String(f.out_of_sync_tracks),
      "data-total": String(total),
      "data-seqnum": String(f.seqnum),
    },
    el("td", { class: "c-pair" }, el("b", {}, f.source), " → ", el("b", {}, f.target)),
    el("td", { class: "c-seq" }, f.seqnum ? String(f.seqnum) : "—"),
    el("td", { class: "c-state" }, badge(f.state.replace("_", ""), f.state), f.failure ? el("span", { class: "muted", title: f.failure }, " ⚠") : null),
    el("td", { class: "c-opts" }, opts),
    el("td", { class: "num c-oos" }, f.out_of_sync_tracks.toLocaleString("en-US")),
    el("td", { class: "c-progress" }, bar, el("span", { class: "pct" }, fmtPct(copied, total))),
    el("td", { class: "num c-rate" }, f.copy_rate ? fmtBytes(f.copy_rate) + "/s" : "unlimited"),
    el("td", { class: "num c-speed" }, speed),
    el("td", { class: "num c-eta" }, eta),
    el("td", { class: "num c-cow" }, cow),
    el("td", { class: "c-map" }, miniCanvas(key)),
  );
  if (key === state.selected) tr.classList.add("selected");
  tr.addEventListener("click", () => select(key));
  return tr;
}

function renderFlashes() {
  const body = $("flash-table").tBodies[0];
  body.replaceChildren(...state.flashes.map(flashRow));
  $("flash-empty").hidden = state.flashes.length > 0;
  for (const key of miniCanvases.keys()) if (!state.bitmaps.has(key)) miniCanvases.delete(key);
  for (const [key, bm] of state.bitmaps) drawMap(miniCanvas(key), bm.mini);
}

function select(key) {
  state.selected = state.selected === key ? null : key;
  render();
  poll();
}

function selectedFlash() {
  return state.flashes.find((f) => keyOf(f) === state.selected) || null;
}

function renderDetail() {
  const f = selectedFlash();
  const d = $("detail");
  d.hidden = !f;
  if (!f) return;
  d.dataset.key = keyOf(f);
  $("detail-title").textContent = f.source + " → " + f.target;
  const stat = (label, value) => el("span", {}, label + " ", el("b", {}, value));
  const copied = f.total_tracks - f.out_of_sync_tracks;
  $("detail-stats").replaceChildren(
    stat("tracks", f.total_tracks.toLocaleString("en-US") + " × " + fmtBytes(f.track_size)),
    stat("copied", fmtPct(copied, f.total_tracks)),
    stat("out of sync", fmtBytes(f.out_of_sync_tracks * f.track_size)),
    stat("changed", f.recording ? f.changed_tracks.toLocaleString("en-US") + " tracks" : "not recording"),
    stat("established", new Date(f.created_ms).toLocaleString()),
  );
  $("detail-axis-end").textContent = "track " + (f.total_tracks - 1).toLocaleString("en-US");
  const bm = state.bitmaps.get(keyOf(f));
  if (bm && bm.big) drawMap($("detail-map"), bm.big);
  d.querySelector('[data-act="copy"]').disabled = f.background_copy;
}

function renderGroups() {
  const bySeq = new Map();
  for (const f of state.flashes) {
    if (!f.seqnum) continue;
    if (!bySeq.has(f.seqnum)) bySeq.set(f.seqnum, []);
    bySeq.get(f.seqnum).push(f);
  }
  const rows = [];
  for (const [seq, fl] of [...bySeq].sort((a, b) => a[0] - b[0])) {
    if (fl.length < 2) continue;
    const states = {};
    for (const f of fl) states[f.state] = (states[f.state] || 0) + 1;
    const total = fl.reduce((a, f) => a + f.total_tracks, 0);
    const copied = fl.reduce((a, f) => a + f.total_tracks - f.out_of_sync_tracks, 0);
    const sources = [...new Set(fl.map((f) => f.source))];
    rows.push(
      el(
        "tr",
        { "data-seqnum": String(seq) },
        el("td", {}, String(seq)),
        el("td", {}, fl.map(keyOf).join(", ")),
        el("td", {}, Object.entries(states).map(([s, n]) => n + " " + s.replace("_", "")).join(", ")),
        el("td", { class: "num" }, fmtPct(copied, total)),
        el(
          "td",
          {},
          actionButton("Freeze", () => api("POST", "/v1/freeze", { volumes: sources }), "froze " + sources.join(", ")),
          " ",
          actionButton("Unfreeze", () => api("POST", "/v1/unfreeze", { volumes: sources }), "released " + sources.join(", ")),
        ),
      ),
    );
  }
  $("group-table").tBodies[0].replaceChildren(...rows);
  $("group-empty").hidden = rows.length > 0;
}

function renderVolumes() {
  const rows = state.volumes.map((v) => {
    const roles = [];
    if (v.source_of.length) roles.push("source of " + v.source_of.join(", "));
    if (v.target_of) roles.push("target of " + v.target_of);
    const actions = el("td", {});
    if (v.source_of.length) {
      actions.append(
        actionButton(v.frozen ? "Unfreeze" : "Freeze", () =>
          api("POST", v.frozen ? "/v1/unfreeze" : "/v1/freeze", { volumes: [v.name] }),
          (v.frozen ? "released " : "froze ") + v.name),
      );
    }
    return el(
      "tr",
      { "data-name": v.name },
      el("td", {}, el("b", {}, v.name)),
      el("td", { class: "num" }, fmtBytes(v.capacity_bytes)),
      el("td", { class: "num" }, fmtBytes(v.allocated_bytes)),
      el("td", {}, v.pool ? v.pool + " (" + (v.provisioning === "thin" ? "ese" : v.provisioning) + ")" : el("span", { class: "muted" }, "sparse")),
      el("td", {}, roles.length ? roles.join("; ") : el("span", { class: "muted" }, "—")),
      el("td", {}, v.frozen ? badge("frozen", "copying") : el("span", { class: "muted" }, "no")),
      el("td", {}, v.write_inhibited ? badge("inhibited", "yes") : el("span", { class: "muted" }, "no")),
      el("td", {}, v.contents_undefined ? badge("undefined", "failed") : el("span", { class: "muted" }, "ok")),
      actions,
    );
  });
  $("volume-table").tBodies[0].replaceChildren(...rows);
  $("volume-empty").hidden = rows.length > 0;
}

// ---- actions ---------------------------------------------------------------------------------

// Runs one API call; shows its refusal (message and code) or `done`, then polls at once.
async function act(call, done) {
  try {
    await call();
    showMessage("ok", done);
  } catch (e) {
    showError(e);
  }
  poll();
}

function actionButton(label, call, done) {
  const b = el("button", { type: "button", class: "small" }, label);
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    act(call, done);
  });
  return b;
}

function detailAction(kind) {
  const f = selectedFlash();
  if (!f) return;
  const path = pairPath(f);
  const id = keyOf(f);
  switch (kind) {
    case "copy":
      return act(() => api("POST", path + "/copy"), "background copy started on " + id);
    case "rate":
      return act(async () => {
        const rate = parseRate($("rate-input").value);
        await api("PUT", path + "/rate", { copy_rate: rate });
      }, "copy rate of " + id + " set");
    case "resync":
      return act(() => api("POST", path + "/resync"), "resynced " + id + ": new T0");
    case "reverse":
      return act(async () => {
        const r = await api("POST", path + "/reverse", { fast: $("reverse-fast").checked });
        state.selected = keyOf(r);
      }, "reversed " + id + ": now " + f.target + ":" + f.source);
    case "withdraw": {
      // Two clicks: the first arms the button for three seconds.
      const b = document.querySelector('[data-act="withdraw"]');
      if (!b.dataset.armed) {
        b.dataset.armed = "1";
        b.textContent = "Click again to withdraw " + id;
        setTimeout(() => {
          delete b.dataset.armed;
          b.textContent = "Withdraw";
        }, 3000);
        return;
      }
      delete b.dataset.armed;
      b.textContent = "Withdraw";
      return act(async () => {
        await api("DELETE", path);
        state.selected = null;
      }, "withdrew " + id);
    }
  }
}

// ---- establish form --------------------------------------------------------------------------

function pairRow() {
  const row = el("div", { class: "pair" });
  const src = el("select", { class: "src", "data-role": "source" });
  const tgt = el("select", { class: "tgt", "data-role": "target" });
  const rm = el("button", { type: "button", class: "link", title: "remove this pair" }, "remove");
  rm.addEventListener("click", () => {
    if ($("pairs").children.length > 1) row.remove();
  });
  row.append(el("span", { class: "muted" }, "Source"), src, el("span", { class: "arrow" }, "→"), el("span", { class: "muted" }, "Target"), tgt, rm);
  fillChoices(src);
  fillChoices(tgt);
  return row;
}

function fillChoices(select) {
  const keep = select.value;
  const names = state.volumes.map((v) => v.name);
  select.replaceChildren(el("option", { value: "" }, "— volume —"), ...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(keep)) select.value = keep;
}

function renderPairChoices() {
  const names = state.volumes.map((v) => v.name).join("\n");
  if (names === state.volumeNames) return;
  state.volumeNames = names;
  for (const s of $("pairs").querySelectorAll("select")) fillChoices(s);
}

async function establish(ev) {
  ev.preventDefault();
  const pairs = [...$("pairs").querySelectorAll(".pair")].map((row) => ({
    source: row.querySelector(".src").value,
    target: row.querySelector(".tgt").value,
  }));
  if (pairs.some((p) => !p.source || !p.target)) {
    showError(new ApiError(0, "incomplete_pair", "choose a source and a target volume for every pair"));
    return;
  }
  const opts = {
    background_copy: document.querySelector('input[name="mode"]:checked').value === "copy",
    persistent: $("opt-persist").checked,
    recording: $("opt-record").checked,
    target_inhibit: $("opt-inhibit").checked,
    seqnum: parseInt($("opt-seq").value || "0", 10) || 0,
  };
  const freeze = $("opt-freeze").checked;
  const names = pairs.map((p) => p.source + ":" + p.target).join(", ");
  await act(async () => {
    opts.copy_rate = parseRate($("opt-rate").value);
    if (pairs.length === 1 && !freeze) {
      await api("POST", "/v1/flash", { ...pairs[0], ...opts });
    } else {
      await api("POST", "/v1/flash/group", { pairs, ...opts, freeze });
    }
  }, "established " + names + (pairs.length > 1 ? " (one T0)" : ""));
}

// ---- start -----------------------------------------------------------------------------------

function start() {
  $("token").value = state.token;
  $("token-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    state.pollError = null;
    try {
      await api("GET", "/v1/volumes");
      showMessage("ok", "connected to the daemon");
    } catch (e) {
      showError(e);
      state.pollError = e.code;
    }
    poll();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("token").value = "";
    state.volumes = [];
    state.flashes = [];
    state.bitmaps = new Map();
    poll();
  });
  $("pairs").append(pairRow());
  $("add-pair").addEventListener("click", () => $("pairs").append(pairRow()));
  $("establish-form").addEventListener("submit", establish);
  for (const b of document.querySelectorAll("#detail [data-act]")) {
    b.addEventListener("click", () => detailAction(b.dataset.act));
  }
  if (!state.token) showMessage("ok", "Enter the API token (the file DATA_DIR/api-token on the daemon's host) to connect.");
  poll();
}

document.addEventListener("DOMContentLoaded", start);

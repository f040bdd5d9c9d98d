#!/usr/bin/env python3
"""The web console in a real headless Chromium against the real daemon binary.

Starts `target/release/tzero serve` on fresh ports in a temporary data directory, creates volumes
with the CLI, writes the source with qemu-io so the background copy has data to move, then drives
the page over TCP: a bad token, the real token, a consistency group and a COPY established
through the form, the heat map watched from partly to fully copied (its pixels and the data
attributes the page keeps in step with them), the table checked against `tzero lsflash --json`,
refused actions showing the API's message with nothing changed, set rate, freeze, unfreeze and
withdraw. Screenshots go to target/console-test/. The daemon is stopped by its PID.

Exit status 0 only if every check passed; the last line is "N passed, M failed". Without
chromium, chromedriver, qemu-io or the selenium module the test is skipped, except under
CI=true, where that is a failure.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TZERO = ROOT / "target" / "release" / "tzero"
OUT = ROOT / "target" / "console-test"
CI = os.environ.get("CI") == "true"
MiB = 1 << 20

# The page's heat map colours (console.js COPIED / UNCOPIED).
COPIED = (31, 157, 107)
UNCOPIED = (228, 87, 46)

passed = 0
failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")
    return ok


def finish(code=None):
    print(f"{passed} passed, {failed} failed")
    sys.exit(code if code is not None else (1 if failed else 0))


def missing_tools():
    missing = [t for t in ("chromium", "chromedriver", "qemu-io") if not shutil.which(t)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python selenium")
    if not TZERO.exists():
        missing.append(f"{TZERO} (cargo build --release)")
    return missing


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, data):
        self.data = data
        self.nbd = free_port()
        self.api = free_port()
        self.log = open(data.parent / "daemon.log", "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TZERO_")}
        self.proc = subprocess.Popen(
            [str(TZERO), "serve", "--data", str(data), "--nbd", f"127.0.0.1:{self.nbd}",
             "--api", f"127.0.0.1:{self.api}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.api), timeout=1).close()
                if (data / "tzero.sock").exists() and (data / "api-token").exists():
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("daemon not ready after 30 s:\n" + self.log_text())
            time.sleep(0.05)
        self.token = (data / "api-token").read_text().strip()
        self.url = f"http://127.0.0.1:{self.api}/"

    def log_text(self):
        return (self.data.parent / "daemon.log").read_text(errors="replace")

    def cli(self, *args, ok=True):
        r = subprocess.run([str(TZERO), "--data", str(self.data), *args], capture_output=True,
                           text=True, env={k: v for k, v in os.environ.items() if not k.startswith("TZERO_")})
        if ok and r.returncode != 0:
            raise RuntimeError(f"tzero {args} failed: {r.stderr}")
        return r

    def json(self, *args):
        return json.loads(self.cli("--json", *args).stdout)

    def flashes(self):
        return self.json("lsflash")

    def volumes(self):
        return self.json("lsfbvol")

    def qemu_io(self, export, *cmds):
        argv = ["qemu-io", "-f", "raw", f"nbd://127.0.0.1:{self.nbd}/{export}"]
        for c in cmds:
            argv += ["-c", c]
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0 or "failed" in r.stdout:
            raise RuntimeError(f"qemu-io {cmds}: {r.stdout}{r.stderr}")

    def stop(self):
        """SIGTERM by PID, then SIGKILL if it does not exit within 60 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1600,1120", "--force-device-scale-factor=1", "--hide-scrollbars"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def wait_for(what, cond, timeout=20.0, every=0.1):
    """Polls `cond` until it returns something truthy; returns it, or None after `timeout`."""
    deadline = time.time() + timeout
    last_exc = None
    while time.time() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the page re-renders every poll: a stale element is retried
            last_exc = e
        time.sleep(every)
    print(f"     (timed out waiting for {what}{': ' + repr(last_exc) if last_exc else ''})")
    return None


# JavaScript that classifies a canvas's pixels by the page's two heat map end colours.
PIXELS_JS = """
const c = document.querySelector(arguments[0]);
if (!c || !c.width) return null;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let copied = 0, uncopied = 0, mixed = 0;
for (let i = 0; i < d.length; i += 4) {
  const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
  if (r === %d && g === %d && b === %d) copied++;
  else if (r === %d && g === %d && b === %d) uncopied++;
  else mixed++;
}
return {copied, uncopied, mixed, total: c.width * c.height,
        data_copied: +c.dataset.copied, data_total: +c.dataset.total, buckets: +c.dataset.buckets};
""" % (COPIED + UNCOPIED)


def message(drv):
    return drv.execute_script(
        "const m = document.getElementById('message');"
        "return m.hidden ? null : {kind: m.className, text: m.querySelector('.text').textContent,"
        " code: m.dataset.code || null};")


def set_token(drv, token):
    box = drv.find_element("id", "token")
    box.clear()
    box.send_keys(token)
    drv.find_element("css selector", "#token-form button[type=submit]").click()


def choose_pairs(drv, pairs):
    """Fills the establish form's pair rows with `pairs` [(source, target)]."""
    from selenium.webdriver.support.ui import Select

    drv.execute_script("const p = document.getElementById('pairs');"
                       "while (p.children.length > 1) p.lastChild.remove();")
    for i, (src, tgt) in enumerate(pairs):
        if i > 0:
            drv.find_element("id", "add-pair").click()
        row = drv.find_elements("css selector", "#pairs .pair")[i]
        Select(row.find_element("css selector", "select.src")).select_by_value(src)
        Select(row.find_element("css selector", "select.tgt")).select_by_value(tgt)


def set_options(drv, copy=True, persist=False, rate="", seq=0):
    drv.find_element("css selector", f'input[name=mode][value={"copy" if copy else "nocopy"}]').click()
    box = drv.find_element("id", "opt-persist")
    if box.is_selected() != persist:
        box.click()
    for (field, value) in (("opt-rate", rate), ("opt-seq", str(seq))):
        e = drv.find_element("id", field)
        e.clear()
        e.send_keys(value)


def table_rows(drv):
    return drv.execute_script(
        "return [...document.querySelectorAll('#flash-table tbody tr')].map(r => ({"
        " source: r.dataset.source, target: r.dataset.target, state: r.dataset.state,"
        " out_of_sync_tracks: +r.dataset.outOfSync, total_tracks: +r.dataset.total,"
        " seqnum: +r.dataset.seqnum, pct: r.querySelector('.pct').textContent,"
        " eta: r.querySelector('.c-eta').textContent, speed: r.querySelector('.c-speed').textContent,"
        " rate: r.querySelector('.c-rate').textContent}));")


def click_row(drv, key):
    drv.execute_script(f"document.querySelector('#flash-table tr[data-key=\"{key}\"]').click()")


def selected(drv):
    return drv.execute_script("const d = document.getElementById('detail');"
                              "return d.hidden ? null : d.dataset.key;")


def run(d, drv):
    for name in ("prod", "backup", "db", "spare", "dbcopy"):
        d.cli("mkfbvol", "--cap", "256MiB", name)
    # Data for the copy to move: 192 MiB of the 256 MiB source.
    d.qemu_io("prod", "write -P 0xaa 0 192M")
    d.qemu_io("db", "write -P 0x5d 0 32M")

    drv.get(d.url)
    check("page served over TCP without the token", "tzero" in drv.title, drv.title)
    check("page asks for the token", wait_for("token prompt", lambda: "api-token" in (message(drv) or {}).get("text", "")),
          message(drv))

    # A bad token: the API's 401 message, nothing listed.
    set_token(drv, "0" * 64)
    m = wait_for("401 message", lambda: (message(drv) or {}).get("code") == "unauthorized" and message(drv))
    check("bad token shows the API's 401 message", m and "wrong API token" in m["text"], m)
    check("bad token lists nothing", drv.execute_script(
        "return document.querySelectorAll('#volume-table tbody tr').length") == 0)
    check("token not in the URL", "0000" not in drv.current_url, drv.current_url)

    set_token(drv, d.token)
    n = wait_for("volume rows", lambda: drv.execute_script(
        "return document.querySelectorAll('#volume-table tbody tr').length") == 5)
    check("volumes listed after the right token", n, message(drv))
    check("token kept in sessionStorage", drv.execute_script(
        "return sessionStorage.getItem('tzero.token')") == d.token)
    names = drv.execute_script("return [...document.querySelectorAll('#volume-table tbody tr')].map(r => r.dataset.name)")
    check("volume table matches lsfbvol", sorted(names) == sorted(v["name"] for v in d.volumes()), names)

    # A consistency group: two NOCOPY pairs, one T0, sequence number 7.
    choose_pairs(drv, [("prod", "spare"), ("db", "dbcopy")])
    set_options(drv, copy=False, persist=True, seq=7)
    drv.find_element("id", "establish").click()
    ok = wait_for("group established", lambda: len(d.flashes()) == 2)
    fl = {f["target"]: f for f in d.flashes()}
    check("group established through the form", ok and fl["spare"]["seqnum"] == 7 == fl["dbcopy"]["seqnum"]
          and not fl["spare"]["background_copy"], fl)
    g = wait_for("group row", lambda: drv.execute_script(
        "const r = document.querySelector('#group-table tr[data-seqnum=\"7\"]'); return r && r.textContent"))
    check("group table shows seq 7 with both pairs", g and "prod:spare" in g and "db:dbcopy" in g, g)

    # COPY prod:backup at 24 MiB/s: 256 MiB takes about ten seconds.
    choose_pairs(drv, [("prod", "backup")])
    set_options(drv, copy=True, persist=True, rate="24MiB", seq=0)
    drv.find_element("id", "establish").click()
    ok = wait_for("copy established", lambda: any(f["target"] == "backup" for f in d.flashes()))
    rel = next((f for f in d.flashes() if f["target"] == "backup"), {})
    check("COPY established through the form", ok and rel.get("background_copy") and rel.get("copy_rate") == 24 * MiB, rel)
    wait_for("row", lambda: drv.execute_script("return !!document.querySelector('tr[data-key=\"prod:backup\"]')"))
    click_row(drv, "prod:backup")
    check("row click opens the detail heat map", wait_for("detail", lambda: selected(drv) == "prod:backup"))

    # Watch the heat maps fill: partly copied first, then fully.
    partial_seen = None
    shot = False
    cow_written = False
    fractions = []
    deadline = time.time() + 90
    while time.time() < deadline:
        mini = drv.execute_script(PIXELS_JS, 'tr[data-key="prod:backup"] canvas')
        big = drv.execute_script(PIXELS_JS, "#detail-map")
        if mini and big and mini["data_total"]:
            frac = mini["data_copied"] / mini["data_total"]
            fractions.append(frac)
            if 0.25 < frac < 0.75 and mini["copied"] and mini["uncopied"] and partial_seen is None:
                partial_seen = (mini, big, table_rows(drv))
            if not cow_written and frac > 0.2:
                # Host writes to a group source: copy-on-write into its NOCOPY target.
                d.qemu_io("db", "write -P 0xbb 8M 8M")
                cow_written = True
            if not shot and 0.45 < frac < 0.8:
                time.sleep(0.6)
                drv.save_screenshot(str(OUT / "console.png"))
                shot = True
            if frac == 1 and mini["copied"] == mini["total"] and big["copied"] == big["total"]:
                break
        time.sleep(0.2)
    check("heat map seen partly copied (both colours on the canvas)", partial_seen is not None, fractions[-5:])
    if partial_seen:
        mini, big, rows = partial_seen
        row = next(r for r in rows if r["target"] == "backup")
        check("mid-copy ETA and speed shown", row["eta"].endswith("s") and "/s" in row["speed"], row)
        check("mid-copy big map has both colours", big["copied"] > 0 and big["uncopied"] > 0, big)
        share = mini["copied"] / mini["total"]
        want = mini["data_copied"] / mini["data_total"]
        check("copied pixels match the copied share", abs(share - want) < 0.05, (share, want))
    check("progress never went backwards", all(b >= a for a, b in zip(fractions, fractions[1:])), fractions)
    final_mini = drv.execute_script(PIXELS_JS, 'tr[data-key="prod:backup"] canvas')
    check("heat map fully copied at the end", final_mini and final_mini["copied"] == final_mini["total"]
          and final_mini["data_copied"] == final_mini["data_total"], final_mini)
    check("screenshot during the copy", shot and (OUT / "console.png").stat().st_size > 10_000)

    # The table against lsflash --json, once the copy is done and the page has polled again.
    def same():
        cli = sorted(d.flashes(), key=lambda f: f["target"])
        page = sorted(table_rows(drv), key=lambda r: r["target"])
        keys = ("source", "target", "state", "out_of_sync_tracks", "total_tracks", "seqnum")
        return [{k: f[k] for k in keys} for f in cli] == [{k: r[k] for k in keys} for r in page] and (cli, page)
    match = wait_for("table equal to lsflash", same, timeout=10)
    check("relationship table matches lsflash --json", match, (d.flashes(), table_rows(drv)))
    cow = next(f for f in d.flashes() if f["target"] == "dbcopy")
    check("copy-on-write reached the NOCOPY target", cow["out_of_sync_tracks"] == cow["total_tracks"] - 128, cow)
    cow_map = drv.execute_script(PIXELS_JS, 'tr[data-key="db:dbcopy"] canvas')
    # 128 of 4096 tracks: a band of copied columns, partly copied columns at its two edges.
    check("NOCOPY heat map shows the copy-on-write tracks", cow_map and cow_map["data_copied"] == 128
          and 0 < cow_map["copied"] < cow_map["total"] * 128 / 4096 and cow_map["uncopied"] > 0, cow_map)
    row = next(r for r in table_rows(drv) if r["target"] == "backup")
    check("copied row shows 100% and done", row["pct"] == "100.0%" and row["eta"] == "done", row)

    # Refused: backup is already a target. The API's message, nothing changed.
    before = d.flashes()
    choose_pairs(drv, [("db", "backup")])
    drv.find_element("id", "establish").click()
    m = wait_for("refusal", lambda: (message(drv) or {}).get("code") == "target_has_source" and message(drv))
    check("refused establish shows the API's message and code", m and "error" in m["kind"] and "backup" in m["text"], m)
    time.sleep(0.5)
    check("refused establish changed nothing", d.flashes() == before or
          [(f["source"], f["target"]) for f in d.flashes()] == [(f["source"], f["target"]) for f in before])

    # Set rate on the group's prod:spare from the detail panel.
    click_row(drv, "prod:spare")
    wait_for("detail prod:spare", lambda: selected(drv) == "prod:spare")
    e = drv.find_element("id", "rate-input")
    e.clear()
    e.send_keys("8MiB")
    drv.find_element("css selector", '#detail [data-act="rate"]').click()
    ok = wait_for("rate", lambda: next(f for f in d.flashes() if f["target"] == "spare")["copy_rate"] == 8 * MiB)
    check("set rate through the page", ok, d.flashes())
    e.clear()
    e.send_keys("lots")
    drv.find_element("css selector", '#detail [data-act="rate"]').click()
    m = wait_for("bad rate", lambda: (message(drv) or {}).get("code") == "invalid_rate" and message(drv))
    check("a bad rate is refused on the page", m, message(drv))

    # Resync without recording: the API refuses with its own code.
    drv.find_element("css selector", '#detail [data-act="resync"]').click()
    m = wait_for("resync refusal", lambda: (message(drv) or {}).get("code") == "not_recording" and message(drv))
    check("refused resync shows not_recording", m, message(drv))

    # Freeze and unfreeze the group's sources from the group table.
    drv.execute_script("[...document.querySelectorAll('#group-table tr[data-seqnum=\"7\"] button')]"
                       ".find(b => b.textContent === 'Freeze').click()")
    ok = wait_for("frozen", lambda: all(v["frozen"] for v in d.volumes() if v["name"] in ("prod", "db")))
    check("freeze through the page", ok, d.volumes())
    wait_for("frozen shown", lambda: drv.execute_script(
        "return document.querySelector('#volume-table tr[data-name=\"db\"]').textContent.includes('frozen')"))
    drv.save_screenshot(str(OUT / "console-frozen.png"))
    drv.execute_script("[...document.querySelectorAll('#group-table tr[data-seqnum=\"7\"] button')]"
                       ".find(b => b.textContent === 'Unfreeze').click()")
    ok = wait_for("unfrozen", lambda: not any(v["frozen"] for v in d.volumes()))
    check("unfreeze through the page", ok, d.volumes())

    # Withdraw prod:spare (two clicks).
    click_row(drv, "prod:spare") if selected(drv) != "prod:spare" else None
    btn = drv.find_element("css selector", '#detail [data-act="withdraw"]')
    btn.click()
    time.sleep(0.3)
    check("withdraw needs a second click", any(f["target"] == "spare" for f in d.flashes()))
    btn.click()
    ok = wait_for("withdrawn", lambda: not any(f["target"] == "spare" for f in d.flashes()))
    check("withdraw through the page", ok, d.flashes())
    ok = wait_for("row gone", lambda: all(r["target"] != "spare" for r in table_rows(drv)))
    check("withdrawn relationship leaves the table", ok)

    # Reverse the completed prod:backup: it becomes backup:prod.
    click_row(drv, "prod:backup")
    wait_for("detail prod:backup", lambda: selected(drv) == "prod:backup")
    drv.find_element("css selector", '#detail [data-act="reverse"]').click()
    ok = wait_for("reversed", lambda: any(f["source"] == "backup" and f["target"] == "prod" for f in d.flashes()))
    check("reverse through the page", ok, (d.flashes(), message(drv)))
    check("detail follows the reversed pair", wait_for("detail backup:prod", lambda: selected(drv) == "backup:prod"))
    drv.save_screenshot(str(OUT / "console-final.png"))

    # A token forgotten mid-session: the page stops showing data.
    drv.find_element("id", "forget").click()
    ok = wait_for("cleared", lambda: drv.execute_script(
        "return document.querySelectorAll('#flash-table tbody tr').length === 0 && !sessionStorage.getItem('tzero.token')"))
    check("forget clears the token and the tables", ok)


def main():
    missing = missing_tools()
    if missing:
        if CI:
            check("tools present", False, "missing under CI=true: " + ", ".join(missing))
            finish()
        print("SKIP console browser test: missing " + ", ".join(missing))
        finish(0)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tzero-console-"))
    data = tmp / "data"
    data.mkdir()
    d = drv = None
    try:
        d = Daemon(data)
        drv = browser()
        run(d, drv)
    except Exception as e:  # any crash of the test itself is a failure, with the daemon's log
        import traceback
        traceback.print_exc()
        check("test ran to the end", False, repr(e))
        if d:
            print(d.log_text()[-4000:])
    finally:
        if drv:
            try:
                logs = [l for l in drv.get_log("browser") if l.get("level") == "SEVERE"]
                # 4xx answers the test provoked are logged by the browser as failed loads.
                errors = [l for l in logs if "the server responded with a status of 4" not in l["message"]]
                check("no JavaScript errors in the browser console", not errors, errors)
            except Exception:
                pass
            drv.quit()
        if d:
            code = d.stop()
            check("daemon stopped cleanly by PID (SIGTERM, exit 0)", code == 0, code)
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()

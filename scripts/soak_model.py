#!/usr/bin/env python3
"""The reference model of scripts/soak.sh: what every volume must read after a crash.

soak.sh drives the real daemon and the real clients; this file only plans writes, reads what
the clients reported, and compares images. State lives in the soak's work directory:

  state.json         volumes (defined or not), the next write sequence number, counters
  model/V.img        the exact contents volume V read at the last check (or was given since,
                     by a fill or a T0): every sector here is known, never guessed
  plan/              this cycle's writers: V.K.cmds (qemu-io commands of chunk K of volume V),
                     V.json (the same as data), data/SEQ.bin (the bytes of write SEQ), V.K.out
                     (what qemu-io printed)

Every 512-byte sector a writer writes is stamped (volume, write sequence number, byte offset),
so a sector that lands at the wrong offset, in the wrong volume, or from the wrong point in
time is told apart from the right one, not only a changed pattern byte.

The rule checked, per sector, after each restart:
  - a write acknowledged with FUA, or acknowledged before a FLUSH that was acknowledged, is
    there (or a later write to the same sector that is also allowed);
  - a write acknowledged but not flushed, or in flight at the kill, may be there or not: the
    sector holds one of the values it had or was given during the cycle, nothing else;
  - every sector no write touched reads exactly as before (for a target: its T0, or what was
    written to it since).
"""

import json
import os
import random
import shutil
import struct
import sys

SECTOR = 512
STAMP = struct.Struct("<2sBxIQ")  # b"TZ", volume index, write seq, byte offset: 16 bytes
MARK_BASE = 0  # marker reads read sector K at offset K*512: any readable place will do

W = os.environ.get("SOAK_DIR", ".")


def path(*p):
    return os.path.join(W, *p)


def load_state():
    with open(path("state.json")) as f:
        return json.load(f)


def save_state(st):
    tmp = path("state.json.tmp")
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1, sort_keys=True)
    os.replace(tmp, path("state.json"))


def stamped(vol_idx, seq, off, length):
    """The bytes of write `seq` to [off, off+length) of volume `vol_idx`."""
    fill = bytes([(seq % 251) + 1]) * (SECTOR - STAMP.size)
    return b"".join(
        STAMP.pack(b"TZ", vol_idx, seq, off + i) + fill for i in range(0, length, SECTOR)
    )


def describe(sector_bytes):
    """A sector as a person reads it: its stamp, or its first bytes."""
    magic, vol, seq, off = STAMP.unpack_from(sector_bytes)
    if magic == b"TZ" and sector_bytes[STAMP.size:] == bytes([(seq % 251) + 1]) * (SECTOR - STAMP.size):
        return f"stamp(vol#{vol}, write {seq}, offset {off})"
    return "bytes " + sector_bytes[:24].hex() + "…"


# ---------------------------------------------------------------------------------------------
# set-up

def cmd_init(names, cap):
    """A fresh model: every volume filled with its own stamped image (write 0)."""
    os.makedirs(path("model"), exist_ok=True)
    st = {"cap": cap, "vols": {}, "seq": 1, "stats": {
        "writes_acked": 0, "writes_fua_acked": 0, "flushes_acked": 0, "writes_in_doubt": 0,
        "sectors_checked": 0, "checks": 0, "established": 0, "withdrawn": 0,
        "undefined_after_withdraw": 0, "refused": 0}}
    for i, n in enumerate(names):
        st["vols"][n] = {"idx": i, "defined": True}
        with open(path("model", n + ".img"), "wb") as f:
            f.write(stamped(i, 0, 0, cap))
    save_state(st)


def cmd_fill(name):
    """A whole-volume stamped image for V (after an incomplete withdraw left it undefined):
    writes it to plan-fill/V.bin and prints the path; `fillcommit` makes it the model once
    the write and its flush were acknowledged."""
    st = load_state()
    seq = st["seq"]
    st["seq"] += 1
    os.makedirs(path("fill"), exist_ok=True)
    p = path("fill", name + ".bin")
    with open(p, "wb") as f:
        f.write(stamped(st["vols"][name]["idx"], seq, 0, st["cap"]))
    save_state(st)
    print(p)


def cmd_fillcommit(name):
    st = load_state()
    os.replace(path("fill", name + ".bin"), path("model", name + ".img"))
    st["vols"][name]["defined"] = True
    save_state(st)


def cmd_t0(pairs):
    """mkflash returned: each target's model is its source's model as of now (no writer ran
    against the source since the last check, so that model is exact)."""
    st = load_state()
    for p in pairs:
        s, t = p.split(":")
        assert st["vols"][s]["defined"], f"source {s} undefined at establish"
        shutil.copyfile(path("model", s + ".img"), path("model", t + ".img"))
        st["vols"][t]["defined"] = True
        st["vols"][t]["flagged"] = False
        st["stats"]["established"] += 1
    save_state(st)


def cmd_withdrawn(pair, undefined):
    st = load_state()
    st["stats"]["withdrawn"] += 1
    if undefined == "true":
        t = pair.split(":")[1]
        st["vols"][t]["defined"] = False
        # The daemon keeps the mark after hosts rewrite the whole volume (fill); only a new T0
        # is known to clear it, so the check accepts it from here on.
        st["vols"][t]["flagged"] = True
        st["stats"]["undefined_after_withdraw"] += 1
    save_state(st)


def cmd_settle(flash_json, lsfbvol_json, words):
    """After `tzero WORDS` was cut by a kill: what happened, from the daemon's listing. Prints
    the volumes to refill (left undefined); exit 1 when a group is half made."""
    st = load_state()
    with open(flash_json) as f:
        rels = {(r["source"], r["target"]) for r in json.load(f)}
    with open(lsfbvol_json) as f:
        vols = {v["name"]: v for v in json.load(f)}
    pairs = [tuple(w.split(":")) for w in words if ":" in w]
    st["stats"]["admin_cut"] = st["stats"].get("admin_cut", 0) + 1
    if words[0] == "mkflash":
        there = [p for p in pairs if p in rels]
        if there and len(there) != len(pairs):
            sys.exit(f"consistency group half established: {there} of {pairs}")
        save_state(st)
        if there:
            cmd_t0([f"{s}:{t}" for s, t in pairs])
        return
    s, t = pairs[0]
    if (s, t) not in rels:
        undefined = vols[t]["contents_undefined"]
        save_state(st)
        cmd_withdrawn(f"{s}:{t}", "true" if undefined else "false")
        if undefined:
            print(t)
        return
    save_state(st)


def cmd_count(key):
    st = load_state()
    st["stats"][key] = st["stats"].get(key, 0) + 1
    save_state(st)


# ---------------------------------------------------------------------------------------------
# topology

def cmd_topo(seed, cycle, flash_json):
    """Chooses this cycle's topology change, if any, from the daemon's own listing, and prints
    one CLI command per line (soak.sh runs them and reports back with t0 / withdrawn)."""
    rnd = random.Random(f"{seed}-{cycle}-topo")
    st = load_state()
    with open(flash_json) as f:
        listing = json.load(f)
        rels = [(r["source"], r["target"], r["state"]) for r in listing]
        recording = [(r["source"], r["target"]) for r in listing if r.get("recording")]
    names = sorted(st["vols"])
    involved = {s for s, _, _ in rels} | {t for _, t, _ in rels}
    targets = {t for _, t, _ in rels}
    out = []
    if cycle == 0:
        # The brief's starting set: a cascade a→b→c (COPY slow, then NOCOPY through b),
        # COPY d→e, NOCOPY f→g; h is free.
        out = ["mkflash --persist --rate 512KiB a:b", "mkflash --nocp b:c",
               "mkflash --rate 1MiB d:e", "mkflash --nocp f:g"]
    elif rnd.random() < 0.25:
        r = rnd.random()
        if rels and r < 0.40:
            s, t, _ = rnd.choice(rels)
            # Mostly withdraw now (an incomplete copy leaves t undefined: refilled, then
            # written again); sometimes withdraw when copied (the target stays defined).
            out = [f"rmflash {s}:{t}" if rnd.random() < 0.8 else f"rmflash --cp {s}:{t}"]
        elif recording and r < 0.47:
            # Incremental: a new T0, only the changed tracks copied again.
            s, t = rnd.choice(recording)
            out = [f"resyncflash --record --persist {s}:{t}"]
        elif rels and r < 0.52:
            s, t, state = rnd.choice(rels)
            if state == "no_copy":
                out = [f"chflash --cp {s}:{t}"]
            else:
                out = [f"setflashrate --rate {rnd.choice(['256KiB', '1MiB', '4MiB', '0'])} {s}:{t}"]
        else:
            free = [n for n in names if n not in involved and st["vols"][n]["defined"]]
            undefined = [n for n in names if n not in involved and not st["vols"][n]["defined"]]
            cands_t = free + undefined
            rnd.shuffle(cands_t)
            pairs = []
            used_src = set()
            for t in cands_t[: 2 if rnd.random() < 0.15 else 1]:
                # Half the time the source is itself a target: a cascade.
                srcs = [n for n in names if n != t and st["vols"][n]["defined"]
                        and n not in {p[1] for p in pairs} and n not in [q for q, _ in pairs]]
                casc = [n for n in srcs if n in targets]
                pool = casc if casc and rnd.random() < 0.5 else srcs
                if not pool:
                    break
                s = rnd.choice(pool)
                pairs.append((s, t))
                used_src.add(s)
            # A group's targets must not be another pair's source.
            pairs = [(s, t) for s, t in pairs if t not in used_src]
            if pairs:
                kind = rnd.random()
                if kind < 0.35:
                    flags = "--nocp"
                else:
                    flags = f"--rate {rnd.choice(['256KiB', '512KiB', '1MiB', '2MiB'])}"
                    if rnd.random() < 0.5:
                        flags += " --persist"
                        if rnd.random() < 0.5:
                            flags += " --record"
                out = [f"mkflash {flags} " + " ".join(f"{s}:{t}" for s, t in pairs)]
    for line in out:
        print(line)


# ---------------------------------------------------------------------------------------------
# writers

def cmd_plan(seed, cycle, n_chunks):
    """This cycle's writers: 2–5 defined volumes, each a list of qemu-io runs ("chunks") that
    soak.sh starts one after another until the daemon dies. Prints the volumes."""
    rnd = random.Random(f"{seed}-{cycle}-plan")
    st = load_state()
    cap = st["cap"]
    sectors = cap // SECTOR
    shutil.rmtree(path("plan"), ignore_errors=True)
    os.makedirs(path("plan", "data"))
    vols = sorted(n for n, v in st["vols"].items() if v["defined"])
    chosen = sorted(rnd.sample(vols, min(len(vols), rnd.randint(2, 5))))
    for v in chosen:
        idx = st["vols"][v]["idx"]
        chunks = []
        for k in range(n_chunks):
            ops, lines, mark = [], [], 0
            for _ in range(rnd.randint(2, 5)):
                for _ in range(rnd.randint(1, 4)):
                    n = rnd.choice([1, 3, 8, 8, 16, 16, 24, 64, 128, 256])
                    start = rnd.randrange(sectors)
                    a = rnd.random()
                    if a < 0.3:
                        start -= start % 8  # 4 KiB aligned
                    elif a < 0.5:
                        start -= start % 128  # track aligned (64 KiB)
                    n = min(n, sectors - start)
                    off, length = start * SECTOR, n * SECTOR
                    seq = st["seq"]
                    st["seq"] += 1
                    fua = rnd.random() < 0.15
                    data = path("plan", "data", f"{seq}.bin")
                    with open(data, "wb") as f:
                        f.write(stamped(idx, seq, off, length))
                    ops.append({"op": "write", "off": off, "len": length, "seq": seq, "fua": fua})
                    lines.append(f"write {'-f ' if fua else ''}-s {data} {off} {length}")
                # Most groups end with a flush (then a read, whose success line proves the
                # flush was answered); some do not, so acknowledged-but-unflushed writes are
                # in doubt at the kill.
                if rnd.random() < 0.7:
                    ops.append({"op": "flush"})
                    lines.append("flush")
                    ops.append({"op": "mark"})
                    lines.append(f"read {MARK_BASE + mark * SECTOR} {SECTOR}")
                    mark += 1
            # Every chunk ends flushed, so a chunk that ran to its end leaves nothing in doubt.
            ops += [{"op": "flush"}, {"op": "mark"}]
            lines += ["flush", f"read {MARK_BASE + mark * SECTOR} {SECTOR}"]
            chunks.append(ops)
            with open(path("plan", f"{v}.{k}.cmds"), "w") as f:
                f.write("\n".join(lines) + "\n")
        with open(path("plan", f"{v}.json"), "w") as f:
            json.dump(chunks, f)
    save_state(st)
    print(" ".join(chosen))


def results(out_text):
    """qemu-io's lines that answer a command, in order: ("ok"|"fail", verb)."""
    res = []
    for line in out_text.splitlines():
        if line.startswith("wrote ") and " bytes at offset " in line:
            res.append(("ok", "write"))
        elif line.startswith("read ") and " bytes at offset " in line:
            res.append(("ok", "read"))
        elif line.startswith(("write failed", "read failed", "flush failed")):
            res.append(("fail", line.split()[0]))
        elif "Pattern verification failed" in line:
            res.append(("fail", "read"))
    return res


def apply_plan(st, vol):
    """Replays what volume `vol`'s writer was told, against what it reported, into
    per-sector sets of allowed values. Returns (cands, required, history):
      cands[s]    the refs sector s may hold now ("P" = the model's value, or (seq, index))
      required[s] True when a durable write decides s (FUA, or acknowledged before an
                  acknowledged flush): its absence is a lost flushed write
      history[s]  every ref s held during the cycle (to tell a lost write from corruption)."""
    with open(path("plan", f"{vol}.json")) as f:
        chunks = json.load(f)
    cands, latest, required, history = {}, {}, {}, {}

    def refs(op):
        s0 = op["off"] // SECTOR
        for i in range(op["len"] // SECTOR):
            yield s0 + i, (op["seq"], i)

    stats = st["stats"]
    for k, ops in enumerate(chunks):
        out = path("plan", f"{vol}.{k}.out")
        if not os.path.exists(out):
            break  # the writer stopped before this chunk: nothing of it was sent
        with open(out, errors="replace") as f:
            res = results(f.read())
        ri, broken = 0, False
        for j, op in enumerate(ops):
            if not broken:
                if op["op"] == "flush":
                    # A flush prints nothing when it succeeds: it succeeded if qemu-io's next
                    # answer is the marker read's success (commands run one at a time).
                    ok = ri < len(res) and res[ri] == ("ok", "read")
                    if ri < len(res) and res[ri] == ("fail", "flush"):
                        ri += 1
                else:
                    ok = ri < len(res) and res[ri][0] == "ok"
                    if ri < len(res):
                        ri += 1
                broken = not ok
            if broken:
                # The first failing command may have reached the daemon; anything after it in
                # this run is in doubt too (if the connection survived, qemu-io went on).
                if op["op"] == "write":
                    stats["writes_in_doubt"] += 1
                    for s, r in refs(op):
                        cands.setdefault(s, {"P"}).add(r)
                        history.setdefault(s, {"P"}).add(r)
                continue
            if op["op"] == "write":
                stats["writes_acked"] += 1
                for s, r in refs(op):
                    history.setdefault(s, {"P"}).add(r)
                    if op["fua"]:
                        cands[s] = {r}
                        required[s] = True
                    else:
                        cands.setdefault(s, {"P"}).add(r)
                    latest[s] = r
                if op["fua"]:
                    stats["writes_fua_acked"] += 1
            elif op["op"] == "flush":
                stats["flushes_acked"] += 1
                for s, r in latest.items():
                    cands[s] = {r}
                    required[s] = True
        # soak.sh starts no chunk after a failed one; if it did, its writes stay in doubt.
    return cands, required, history


# ---------------------------------------------------------------------------------------------
# the check

def cmd_check(read_dir, lsfbvol_json, lsflash_json, limit_print=8):
    """Compares every defined volume, as read back through the restarted daemon, with the
    model. On success the read images become the model (doubtful sectors are settled as the
    daemon chose). Exit 1, with volume, offset, expected and got, on any violation."""
    st = load_state()
    stats = st["stats"]
    problems = {"corruption": 0, "lost": 0, "other": 0}

    with open(lsfbvol_json) as f:
        daemon_vols = {v["name"]: v for v in json.load(f)}
    with open(lsflash_json) as f:
        rels = json.load(f)
    # What the kill interrupted (as the restarted daemon lists it): a background copy still
    # owing tracks, a NOCOPY relationship, a cascade (a target that is also a source).
    tgts = {r["target"] for r in rels}
    for key, hit in (("restarts_with_copy_in_progress", any(r["state"] == "copying" for r in rels)),
                     ("restarts_with_nocopy", any(r["state"] == "no_copy" for r in rels)),
                     ("restarts_with_cascade", any(r["source"] in tgts for r in rels))):
        stats[key] = stats.get(key, 0) + (1 if hit else 0)
    for r in rels:
        if r["state"] == "failed":
            print(f"FAILED RELATIONSHIP {r['source']}:{r['target']}: {r.get('failure')}")
            problems["other"] += 1

    planned = set()
    if os.path.isdir(path("plan")):
        planned = {n[: -len(".json")] for n in os.listdir(path("plan")) if n.endswith(".json")}
    data_cache = {}

    def ref_bytes(ref, model, s):
        if ref == "P":
            return model[s * SECTOR:(s + 1) * SECTOR]
        seq, i = ref
        if seq not in data_cache:
            with open(path("plan", "data", f"{seq}.bin"), "rb") as f:
                data_cache[seq] = f.read()
        return data_cache[seq][i * SECTOR:(i + 1) * SECTOR]

    settled = {}
    writers_cut = 0
    for v in sorted(st["vols"]):
        if not st["vols"][v]["defined"]:
            continue
        if daemon_vols.get(v, {}).get("contents_undefined") and not st["vols"][v].get("flagged"):
            print(f"UNDEFINED {v}: the daemon marks it contents_undefined, but no withdraw "
                  f"left it so (its model is exact)")
            problems["other"] += 1
            continue
        with open(path("model", v + ".img"), "rb") as f:
            model = f.read()
        with open(os.path.join(read_dir, v + ".img"), "rb") as f:
            got = f.read()
        stats["sectors_checked"] += len(model) // SECTOR
        if len(got) != len(model):
            print(f"SIZE {v}: read {len(got)} bytes, the volume has {len(model)}")
            problems["other"] += 1
            continue
        cands, required, history = ({}, {}, {})
        if v in planned:
            cands, required, history = apply_plan(st, v)
            if any("P" in c and len(c) > 1 for c in cands.values()):
                writers_cut += 1
        if got == model and all("P" in c for c in cands.values()):
            settled[v] = got
            continue
        shown = 0
        # Sectors no write touched must equal the model: compared run by run (fast), sector
        # by sector only inside a run that differs; touched sectors one by one.
        n_sec = len(model) // SECTOR
        suspects = set(cands)
        edges = sorted(cands) + [n_sec]
        a = 0
        for b in edges:
            if b > a and got[a * SECTOR:b * SECTOR] != model[a * SECTOR:b * SECTOR]:
                suspects.update(x for x in range(a, b)
                                if got[x * SECTOR:(x + 1) * SECTOR] != model[x * SECTOR:(x + 1) * SECTOR])
            a = b + 1
        for s in sorted(suspects):
            g = got[s * SECTOR:(s + 1) * SECTOR]
            allowed = cands.get(s, {"P"})
            vals = [ref_bytes(r, model, s) for r in sorted(allowed, key=str)]
            if g in vals:
                continue
            older = [ref_bytes(r, model, s) for r in history.get(s, {"P"}) - allowed]
            lost = required.get(s, False) and g in older
            problems["lost" if lost else "corruption"] += 1
            if shown < limit_print:
                shown += 1
                first = next(i for i in range(SECTOR) if any(x[i] != g[i] for x in vals))
                print(f"{'LOST FLUSHED WRITE' if lost else 'CORRUPTION'}: volume {v} offset "
                      f"{s * SECTOR + first} (sector {s}): expected "
                      f"{' or '.join(describe(x) for x in vals)}, got {describe(g)}")
            elif shown == limit_print:
                shown += 1
                print(f"... more bad sectors in {v}")
        settled[v] = got
    stats["checks"] += 1
    if writers_cut:
        stats["restarts_with_writes_in_doubt"] = stats.get("restarts_with_writes_in_doubt", 0) + 1
    bad = sum(problems.values())
    # Counters accumulate in state.json for the summary line; a failed check keeps the
    # model, the plan and the data files as evidence.
    st["last_problems"] = problems
    st["total_problems"] = {k: st.get("total_problems", {}).get(k, 0) + n for k, n in problems.items()}
    if not bad:
        for v, got in settled.items():
            tmp = path("model", v + ".img.tmp")
            with open(tmp, "wb") as f:
                f.write(got)
            os.replace(tmp, path("model", v + ".img"))
        shutil.rmtree(path("plan"), ignore_errors=True)
    save_state(st)
    sys.exit(1 if bad else 0)


def cmd_summary():
    st = load_state()
    tp = st.get("total_problems", {})
    s = st["stats"]
    print(f"corruptions={tp.get('corruption', 0)} lost_flushed_writes={tp.get('lost', 0)} "
          f"other_failures={tp.get('other', 0)} writes_acked={s['writes_acked']} "
          f"fua_acked={s['writes_fua_acked']} flushes_acked={s['flushes_acked']} "
          f"writes_in_doubt={s['writes_in_doubt']} established={s['established']} "
          f"withdrawn={s['withdrawn']} (undefined after: {s['undefined_after_withdraw']}) "
          f"resynced={s.get('resynced', 0)} refused={s['refused']} admin_cut_by_kill={s.get('admin_cut', 0)} "
          f"kills_in_recovery={s.get('kills_in_recovery', 0)} checks={s['checks']} "
          f"sectors_checked={s['sectors_checked']} restarts_with: "
          f"writes_in_doubt={s.get('restarts_with_writes_in_doubt', 0)} "
          f"copy_in_progress={s.get('restarts_with_copy_in_progress', 0)} "
          f"nocopy={s.get('restarts_with_nocopy', 0)} cascade={s.get('restarts_with_cascade', 0)}")


def cmd_find_file(vol, data_dir):
    """The daemon's file of volume `vol`: the only vol-*.img equal to its model (soak.sh
    wrote that volume last, so no other file holds the same bytes)."""
    with open(path("model", vol + ".img"), "rb") as f:
        model = f.read()
    hits = []
    for n in sorted(os.listdir(data_dir)):
        if n.startswith("vol-") and n.endswith(".img"):
            with open(os.path.join(data_dir, n), "rb") as f:
                if f.read() == model:
                    hits.append(n)
    if len(hits) != 1:
        sys.exit(f"self-test: {len(hits)} files match {vol}'s model: {hits}")
    print(os.path.join(data_dir, hits[0]))


def cmd_corrupt(file, seed):
    """Flips one byte of `file` at a random offset; prints the offset."""
    rnd = random.Random(f"{seed}-corrupt")
    size = os.path.getsize(file)
    off = rnd.randrange(size)
    with open(file, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x5A]))
    print(off)


def main():
    a = sys.argv[1:]
    cmd = a[0]
    if cmd == "init":
        cmd_init(a[2:], int(a[1]))
    elif cmd == "fill":
        cmd_fill(a[1])
    elif cmd == "fillcommit":
        cmd_fillcommit(a[1])
    elif cmd == "t0":
        cmd_t0(a[1:])
    elif cmd == "withdrawn":
        cmd_withdrawn(a[1], a[2])
    elif cmd == "settle":
        cmd_settle(a[1], a[2], a[3:])
    elif cmd == "count":
        cmd_count(a[1])
    elif cmd == "topo":
        cmd_topo(a[1], int(a[2]), a[3])
    elif cmd == "plan":
        cmd_plan(a[1], int(a[2]), int(a[3]))
    elif cmd == "check":
        cmd_check(a[1], a[2], a[3])
    elif cmd == "summary":
        cmd_summary()
    elif cmd == "find-file":
        cmd_find_file(a[1], a[2])
    elif cmd == "corrupt":
        cmd_corrupt(a[1], a[2])
    else:
        sys.exit(f"soak_model.py: unknown command {cmd}")


if __name__ == "__main__":
    main()

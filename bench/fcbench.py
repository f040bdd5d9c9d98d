#!/usr/bin/env python3
"""tzero vs QEMU (qemu-nbd / qemu-storage-daemon) under the same workloads, in one run.

Driven by bench/run.sh; stdlib only. Every step is bounded in time. Writes
OUT/results.json and OUT/results.md; exits non-zero (loudly) when a data
check fails, because a benchmark that corrupts data is a failure, not a figure.

Workloads (see BENCHMARKS.md, "Daemon and FlashCopy under load"):
  issue3  fio baselines: tzero export vs qemu-nbd --cache=none --aio=native (+ writeback, info)
  qsdbase QSD export with no job (QEMU's own baseline for W2/W3/W5/W6)
  W1 establish latency   W2 COPY timeline   W3 NOCOPY timeline   W4 copy time vs cp
  W5 persistent-relationship overhead   W6 target reads during the copy   W7 incremental resync
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from qmp_client import QMPClient, QMPError  # noqa: E402

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
HOST = "127.0.0.1"
P_TZ_NBD, P_TZ_API, P_QNBD, P_QSD = 11909, 11910, 11900, 11901
PATTERN = bytes.fromhex("5aa5c33c")          # what W2/W3 writes (fio --buffer_pattern)
BLK = 4096


# ----------------------------------------------------------------------------- config
class Cfg:
    def __init__(self, a):
        self.quick = a.quick
        self.work = os.path.abspath(a.work)
        self.out = os.path.abspath(a.out)
        self.tzero = a.tzero
        self.only = set(a.only.split(",")) if a.only else None
        if a.quick:
            self.size, self.rt, self.ramp, self.pre, self.w3_post = 256 * MiB, 4, 1, 2, 8
            self.reps, self.w6_rate, self.w7_ios = 3, 16 * MiB, 512
        else:
            self.size, self.rt, self.ramp, self.pre, self.w3_post = 2 * GiB, 12, 2, 5, 20
            self.reps, self.w6_rate, self.w7_ios = 7, 64 * MiB, 4096
        self.w2_cap = 150          # seconds fio may run in W2 before we give up on the copy
        self.fio_dir = os.path.join(self.work, "fio")
        self.log_dir = os.path.join(self.work, "logs")
        for d in (self.work, self.out, self.fio_dir, self.log_dir):
            os.makedirs(d, exist_ok=True)

    def want(self, name):
        return self.only is None or name in self.only


C = None
RESULTS = {"workloads": {}, "checks": [], "notes": [], "errors": []}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, timeout=600, check=True, capture=False):
    r = subprocess.run(cmd, shell=True, timeout=timeout, check=False, text=True,
                       executable="/bin/bash",
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE if capture else None)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {cmd}\n{r.stderr or ''}")
    return r.stdout if capture else r.returncode


def md5_file(path):
    return sh(f"md5sum {path}", timeout=300, capture=True).split()[0]


def md5_nbd(uri):
    """md5 of a whole export read with nbdcopy (the client's view)."""
    return sh(f"set -o pipefail; nbdcopy '{uri}' - | md5sum", timeout=300, capture=True).split()[0]


def check(workload, system, what, expected, got):
    ok = expected == got
    RESULTS["checks"].append({"workload": workload, "system": system, "what": what,
                              "expected": expected, "got": got, "ok": ok})
    if ok:
        log(f"  check OK   {workload}/{system}: {what}")
    else:
        log(f"  !!!!!!!!!! DATA CHECK FAILED {workload}/{system}: {what}: expected {expected} got {got}")
    return ok


# ----------------------------------------------------------------------------- fio
class Fio:
    """One fio run (ioengine=nbd). start() -> running; wait()/stop() -> summary dict."""

    def __init__(self, name, uri, rw, bs, qd, runtime=None, ramp=None, iops_log=False,
                 number_ios=None, cap=None, per_io_log=False):
        self.name, self.uri = name, uri
        self.json = os.path.join(C.fio_dir, f"{name}.json")
        self.logbase = os.path.join(C.fio_dir, name)
        for f in (self.json, self.logbase + "_iops.1.log"):
            if os.path.exists(f):
                os.unlink(f)
        cmd = ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", f"--size={C.size}",
               f"--rw={rw}", f"--bs={bs}", f"--iodepth={qd}", "--numjobs=1",
               "--randrepeat=0", "--norandommap", "--output-format=json", f"--output={self.json}"]
        if runtime is not None:
            cmd += ["--time_based", f"--runtime={runtime}"]
        if ramp:
            cmd += [f"--ramp_time={ramp}"]
        if number_ios:
            cmd += [f"--number_ios={number_ios}"]
        if iops_log:
            cmd += [f"--write_iops_log={self.logbase}", "--log_avg_msec=1000", "--log_unix_epoch=1"]
        if per_io_log:
            # one line per completed I/O: epoch ms, 1, dir, bs, offset. Gives the 1 s IOPS
            # timeline aligned on T0 and, with a fixed data pattern, the exact T0 image.
            cmd += [f"--write_iops_log={self.logbase}", "--log_offset=1", "--log_unix_epoch=1",
                    f"--buffer_pattern=0x{PATTERN.hex()}"]
        self.cmd = cmd
        self.cap = cap or ((runtime or 60) + (ramp or 0) + 60)
        self.p = None

    def start(self):
        self.t_start = time.time()
        self.p = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=open(
            os.path.join(C.log_dir, f"fio-{self.name}.err"), "w"))
        return self

    def stop(self):
        """Ask fio to end now (SIGINT: it still writes its JSON and logs)."""
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        return self.wait()

    def running(self):
        return self.p.poll() is None

    def wait(self):
        try:
            self.p.wait(timeout=max(1, self.cap - (time.time() - self.t_start)))
        except subprocess.TimeoutExpired:
            log(f"  fio {self.name} over its time cap: SIGINT")
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.summary()

    def run(self):
        return self.start().wait()

    def summary(self):
        try:
            raw = open(self.json).read()
            d = json.loads(raw[raw.index("{"):])
        except (OSError, ValueError) as e:
            raise RuntimeError(f"fio {self.name}: no JSON output ({e}); see {C.log_dir}/fio-{self.name}.err")
        j = d["jobs"][0]
        if j.get("error"):
            raise RuntimeError(f"fio {self.name}: error {j['error']}")
        k = "write" if j["write"]["io_bytes"] else "read"
        s = j[k]
        pct = s["clat_ns"].get("percentile", {})
        return {"iops": round(s["iops"]), "MiBps": round(s["bw"] / 1024, 1),
                "clat_mean_us": round(s["clat_ns"]["mean"] / 1000, 1),
                "clat_p99_us": round(pct.get("99.000000", 0) / 1000, 1),
                "runtime_s": round(s["runtime"] / 1000, 2), "io_MiB": round(s["io_bytes"] / MiB, 1)}

    def timeline(self):
        """[(epoch seconds at the end of the 1 s window, IOPS)]"""
        fn = self.logbase + "_iops.1.log"
        out = []
        if os.path.exists(fn):
            for line in open(fn):
                f = line.split(",")
                if len(f) >= 2:
                    out.append((int(f[0]) / 1000.0, int(f[1])))
        return out


# ----------------------------------------------------------------------------- tzero
class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Tzero:
    def __init__(self):
        self.data = os.path.join(C.work, "tzero-data")
        sh(f"rm -rf {self.data}")
        os.makedirs(self.data)
        self.sock = os.path.join(self.data, "tzero.sock")
        self.logf = open(os.path.join(C.log_dir, "tzero-serve.log"), "a")
        self.p = subprocess.Popen([C.tzero, "serve", "--data", self.data, "--nbd", f"{HOST}:{P_TZ_NBD}",
                                   "--api", f"{HOST}:{P_TZ_API}"], stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")))
        deadline = time.monotonic() + 30
        while True:
            try:
                self.conn = UnixHTTP(self.sock)
                self.req("GET", "/v1/volumes")
                break
            except (OSError, http.client.HTTPException):
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tzero serve did not start; see logs/tzero-serve.log")
                time.sleep(0.05)
        log(f"  tzero serve pid {self.p.pid}")

    def req(self, method, path, body=None):
        """(status, json or None, seconds) on the kept-alive unix-socket connection."""
        hdr = {"content-type": "application/json"} if body is not None else {}
        data = json.dumps(body) if body is not None else None
        for attempt in (0, 1):
            try:
                t = time.perf_counter()
                self.conn.request(method, path, body=data, headers=hdr)
                r = self.conn.getresponse()
                raw = r.read()
                dt = time.perf_counter() - t
                break
            except (http.client.HTTPException, ConnectionError, BrokenPipeError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = UnixHTTP(self.sock)
        try:
            js = json.loads(raw) if raw else None
        except ValueError:
            js = raw.decode(errors="replace")
        return r.status, js, dt

    def ok(self, method, path, body=None):
        st, js, dt = self.req(method, path, body)
        if st >= 300:
            raise RuntimeError(f"tzero {method} {path} -> {st} {js}")
        return js, dt

    def uri(self, vol):
        return f"nbd://{HOST}:{P_TZ_NBD}/{vol}"

    def mkvol(self, name, cap):
        self.ok("POST", "/v1/volumes", {"name": name, "capacity_bytes": cap})

    def rmvol(self, *names):
        for n in names:
            st, js, _ = self.req("DELETE", f"/v1/volumes/{n}")
            if st >= 300 and st != 404:
                log(f"  (rmvol {n}: {st} {js})")

    def establish(self, src, tgt, copy=True, persist=False, rate=0, record=False):
        js, dt = self.ok("POST", "/v1/flash", {"source": src, "target": tgt, "background_copy": copy,
                                              "persistent": persist, "copy_rate": rate,
                                              "recording": record})
        return js, dt

    def flash(self, src, tgt):
        st, js, _ = self.req("GET", f"/v1/flash/{src}/{tgt}")
        return js if st == 200 else None

    def withdraw(self, src, tgt):
        st, js, dt = self.req("DELETE", f"/v1/flash/{src}/{tgt}")
        if st >= 300 and st != 404:
            raise RuntimeError(f"withdraw {src}:{tgt}: {st} {js}")
        return dt

    def wait_copied(self, src, tgt, t0, timeout=600, poll=0.01):
        """Seconds since t0 (perf_counter) until the relationship is copied (or gone, if not persistent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            f = self.flash(src, tgt)
            if f is None or (f["out_of_sync_tracks"] == 0 and f["state"] == "copied"):
                return time.perf_counter() - t0
            if f["state"] == "failed":
                raise RuntimeError(f"relationship failed: {f}")
            time.sleep(poll)
        raise TimeoutError(f"copy {src}:{tgt} not done in {timeout}s")

    def fill(self, vol, golden):
        """Golden data written through NBD (like a host would), then synced to disk."""
        sh(f"nbdcopy --flush {golden} '{self.uri(vol)}'", timeout=300)
        sh("sync", timeout=300)

    def stop(self):
        try:
            self.conn.close()
        except Exception:
            pass
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=90)
            except subprocess.TimeoutExpired:
                log("  tzero did not stop within 90 s after SIGTERM: SIGKILL")
                self.p.kill()
                self.p.wait()
        log(f"  tzero serve exited with {self.p.returncode}")
        if self.p.returncode not in (0, None):
            RESULTS["errors"].append(f"tzero serve exit code {self.p.returncode} after SIGTERM")


# ----------------------------------------------------------------------------- QEMU
class QSD:
    """qemu-storage-daemon with src/tgt raw files (O_DIRECT, aio=native), source exported as 'src'."""

    def __init__(self, tag, golden):
        self.dir = os.path.join(C.work, "qemu")
        os.makedirs(self.dir, exist_ok=True)
        self.src, self.tgt = os.path.join(self.dir, "src.raw"), os.path.join(self.dir, "tgt.raw")
        self.sockp = os.path.join(self.dir, "qmp.sock")
        sh(f"rm -f {self.src} {self.tgt} {self.sockp}")
        sh(f"cp --reflink=never {golden} {self.src} && fallocate -l {C.size} {self.tgt} && sync", timeout=300)
        cmd = ["qemu-storage-daemon",
               "--blockdev", f"driver=file,node-name=src-file,filename={self.src},cache.direct=on,aio=native",
               "--blockdev", "driver=raw,node-name=src,file=src-file",
               "--blockdev", f"driver=file,node-name=tgt-file,filename={self.tgt},cache.direct=on,aio=native",
               "--blockdev", "driver=raw,node-name=tgt,file=tgt-file",
               "--nbd-server", f"addr.type=inet,addr.host={HOST},addr.port={P_QSD},max-connections=16",
               "--export", "type=nbd,id=exp-src,node-name=src,name=src,writable=on",
               "--chardev", f"socket,id=qmp0,path={self.sockp},server=on,wait=off",
               "--monitor", "chardev=qmp0"]
        self.logf = open(os.path.join(C.log_dir, f"qsd-{tag}.log"), "w")
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT)
        self.q = QMPClient(self.sockp)
        self.view = False
        log(f"  qemu-storage-daemon pid {self.p.pid}")

    def uri(self, name="src"):
        return f"nbd://{HOST}:{P_QSD}/{name}"

    def establish(self, sync, speed=0):
        args = {"job-id": "fc", "device": "src", "target": "tgt", "sync": sync,
                "filter-node-name": "fc-cbw", "auto-finalize": False, "auto-dismiss": False}
        if speed:
            args["speed"] = speed
        return self.q.timed("blockdev-backup", **args)[1]

    def add_view(self):
        t = time.perf_counter()
        self.q.execute("blockdev-add", driver="snapshot-access", **{"node-name": "snap", "file": "fc-cbw"})
        self.q.execute("block-export-add", type="nbd", id="exp-snap", **{"node-name": "snap"},
                       name="snap", writable=False)
        self.view = True
        return time.perf_counter() - t

    def del_view(self):
        if not self.view:
            return
        self.q.execute("block-export-del", id="exp-snap")
        self.q.wait_event("BLOCK_EXPORT_DELETED", timeout=60)
        self.q.execute("blockdev-del", **{"node-name": "snap"})
        self.view = False

    def job(self):
        js = self.q.execute("query-jobs")
        return js[0] if js else None

    def wait_pending(self, t0, timeout=600, poll=0.01):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            j = self.job()
            if j is None or j["status"] in ("pending", "concluded", "null") or j.get("error"):
                if j and j.get("error"):
                    raise RuntimeError(f"QEMU job error {j}")
                return time.perf_counter() - t0
            time.sleep(poll)
        raise TimeoutError("QEMU backup job did not finish")

    def finalize(self):
        self.del_view()
        self.q.execute("job-finalize", id="fc")
        self.q.wait_event("BLOCK_JOB_COMPLETED", timeout=120)
        self.q.execute("job-dismiss", id="fc")

    def cancel(self):
        self.del_view()
        j = self.job()
        if j is None:
            return
        if j["status"] not in ("concluded", "null"):
            self.q.execute("job-cancel", id="fc")
            self.q.wait_event(("BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"), timeout=120)
        self.q.execute("job-dismiss", id="fc")

    def stop(self):
        try:
            self.q.execute("quit")
        except Exception:
            pass
        self.q.close()
        try:
            self.p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


class QemuNbd:
    def __init__(self, golden, cache):
        self.dir = os.path.join(C.work, "qemu")
        os.makedirs(self.dir, exist_ok=True)
        self.file = os.path.join(self.dir, "base.raw")
        sh(f"rm -f {self.file} && cp --reflink=never {golden} {self.file} && sync", timeout=300)
        aio = "native" if cache == "none" else "threads"
        self.p = subprocess.Popen(["qemu-nbd", "-f", "raw", f"--cache={cache}", f"--aio={aio}", "-b", HOST,
                                   "-p", str(P_QNBD), "-t", "-e", "8", "-x", "base", self.file],
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(C.log_dir, "qemu-nbd.log"), "a"))
        deadline = time.monotonic() + 15
        while sh(f"nbdinfo --size nbd://{HOST}:{P_QNBD}/base", check=False, timeout=10) != 0:
            if time.monotonic() > deadline or self.p.poll() is not None:
                raise RuntimeError("qemu-nbd did not start")
            time.sleep(0.1)

    def uri(self):
        return f"nbd://{HOST}:{P_QNBD}/base"

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


# ----------------------------------------------------------------------------- workloads
FIO_BASE = [("randread4k", "randread", "4k", 32), ("randwrite4k", "randwrite", "4k", 32),
            ("seqread1m", "read", "1M", 8), ("seqwrite1m", "write", "1M", 8)]


def settle():
    """Write back every dirty page (outside any measurement) so that one run's deferred
    writeback does not land in the next run; returns the seconds `sync` took."""
    t = time.perf_counter()
    sh("sync", timeout=600)
    return round(time.perf_counter() - t, 2)


def fio_set(prefix, uri, which=FIO_BASE):
    r = {}
    settle()
    for name, rw, bs, qd in which:
        r[name] = Fio(f"{prefix}-{name}", uri, rw, bs, qd, runtime=C.rt, ramp=C.ramp).run()
        # buffered writers (tzero, qemu-nbd writeback) leave dirty pages: the sync time after
        # the run is the writeback they deferred (O_DIRECT writers paid it inline)
        r[name]["sync_after_s"] = settle()
        log(f"    {prefix} {name}: {r[name]['iops']} IOPS {r[name]['MiBps']} MiB/s p99 {r[name]['clat_p99_us']} us"
            f" (sync after: {r[name]['sync_after_s']} s)")
    return r


def w_issue3(tz, golden):
    log("issue 3: fio baselines (no relationship)")
    res = {}
    tz.mkvol("b3", C.size)
    tz.fill("b3", golden)
    res["tzero"] = fio_set("i3-tzero", tz.uri("b3"))
    tz.rmvol("b3")
    for cache in ("none", "writeback"):
        q = QemuNbd(golden, cache)
        try:
            res[f"qemu_nbd_{cache}"] = fio_set(f"i3-qnbd-{cache}", q.uri())
        finally:
            q.stop()
    RESULTS["workloads"]["issue3"] = res


def w_qsdbase(golden):
    log("QSD baseline (export, no job): QEMU's own baseline for W2/W3/W5/W6")
    q = QSD("base", golden)
    try:
        r = fio_set("qsdbase", q.uri(), [FIO_BASE[0], FIO_BASE[1]])
    finally:
        q.stop()
    RESULTS["workloads"]["qsd_baseline"] = r


def med(xs):
    return round(statistics.median(xs) * 1000, 3) if xs else None


def w1(tz, golden, gmd5):
    log("W1: establish latency")
    res = {"tzero": {}, "qemu": {}}
    n = C.reps
    # ---- tzero, 2 GiB (or --quick size)
    tz.mkvol("w1s", C.size)
    tz.mkvol("w1t", C.size)
    tz.fill("w1s", golden)
    r = res["tzero"]
    for mode, copy in (("nocopy", False), ("copy", True)):
        ts = []
        for _ in range(n):
            ts.append(tz.establish("w1s", "w1t", copy=copy)[1])
            time.sleep(0.2)
            tz.withdraw("w1s", "w1t")
            time.sleep(0.1)
        r[f"{mode}_idle_ms"] = med(ts)
        r[f"{mode}_idle_all_ms"] = [round(x * 1000, 3) for x in ts]
    f = Fio("w1-tzero-load", tz.uri("w1s"), "randwrite", "4k", 32, runtime=n * 2 * 0.6 + 6).start()
    time.sleep(2)
    for mode, copy in (("nocopy", False), ("copy", True)):
        ts = []
        for _ in range(n):
            ts.append(tz.establish("w1s", "w1t", copy=copy)[1])
            time.sleep(0.3)
            tz.withdraw("w1s", "w1t")
            time.sleep(0.2)
        r[f"{mode}_load_ms"] = med(ts)
        r[f"{mode}_load_all_ms"] = [round(x * 1000, 3) for x in ts]
    r["load_fio"] = f.wait()
    # correctness: T0 = the source now; NOCOPY; writes; the target must still read as T0
    t0md5 = md5_nbd(tz.uri("w1s"))
    tz.establish("w1s", "w1t", copy=False)
    Fio("w1-tzero-after", tz.uri("w1s"), "randwrite", "4k", 32, runtime=3).run()
    check("W1", "tzero", "NOCOPY target == source@T0 after 3 s of 4k randwrite", t0md5, md5_nbd(tz.uri("w1t")))
    tz.withdraw("w1s", "w1t")
    tz.rmvol("w1s", "w1t")
    # ---- tzero, 1 TiB sparse volumes
    tz.mkvol("w1bs", TiB)
    tz.mkvol("w1bt", TiB)
    for mode, copy in (("nocopy", False), ("copy", True)):
        ts = []
        for _ in range(n):
            ts.append(tz.establish("w1bs", "w1bt", copy=copy)[1])
            time.sleep(0.2)
            tz.withdraw("w1bs", "w1bt")
            time.sleep(0.1)
        r[f"{mode}_1TiB_idle_ms"] = med(ts)
        r[f"{mode}_1TiB_idle_all_ms"] = [round(x * 1000, 3) for x in ts]
    tz.rmvol("w1bs", "w1bt")
    log(f"    tzero: {json.dumps({k: v for k, v in r.items() if k.endswith('_ms')})}")

    # ---- QEMU
    q = QSD("w1", golden)
    r = res["qemu"]
    try:
        def cycle(sync, view):
            t = q.establish(sync)
            tv = q.add_view() if view else None
            time.sleep(0.2)
            q.cancel()
            time.sleep(0.1)
            return t, tv
        for mode, sync in (("nocopy", "none"), ("copy", "full")):
            xs = [cycle(sync, True) for _ in range(n)]
            r[f"{mode}_idle_ms"] = med([x[0] for x in xs])
            r[f"{mode}_idle_all_ms"] = [round(x[0] * 1000, 3) for x in xs]
            r[f"{mode}_idle_view_add_ms"] = med([x[1] for x in xs])
        f = Fio("w1-qemu-load", q.uri(), "randwrite", "4k", 32, runtime=n * 2 * 0.6 + 6).start()
        time.sleep(2)
        for mode, sync in (("nocopy", "none"), ("copy", "full")):
            xs = [cycle(sync, True) for _ in range(n)]
            r[f"{mode}_load_ms"] = med([x[0] for x in xs])
            r[f"{mode}_load_all_ms"] = [round(x[0] * 1000, 3) for x in xs]
            r[f"{mode}_load_view_add_ms"] = med([x[1] for x in xs])
        r["load_fio"] = f.wait()
        t0md5 = md5_nbd(q.uri())
        q.establish("none")
        q.add_view()
        Fio("w1-qemu-after", q.uri(), "randwrite", "4k", 32, runtime=3).run()
        check("W1", "qemu", "NOCOPY snapshot view == source@T0 after 3 s of 4k randwrite", t0md5,
              md5_nbd(q.uri("snap")))
        q.cancel()
    finally:
        q.stop()
    log(f"    qemu: {json.dumps({k: v for k, v in r.items() if k.endswith('_ms')})}")
    RESULTS["workloads"]["W1"] = res


def completions(f):
    """[(epoch seconds of completion, offset)] from a per-I/O iops log."""
    fn = f.logbase + "_iops.1.log"
    out = []
    with open(fn) as fh:
        for line in fh:
            p = line.split(",")
            if len(p) >= 5:
                out.append((int(p[0]) / 1000.0, int(p[4])))
    return out


def bins_from(comp, t0):
    """IOPS per 1 s window aligned on T0: {k: count of completions in [t0+k, t0+k+1)}; only whole windows."""
    if not comp:
        return {}
    first, last = comp[0][0], comp[-1][0]
    cnt = {}
    for t, _ in comp:
        k = int((t - t0) // 1)
        cnt[k] = cnt.get(k, 0) + 1
    lo = math.ceil(first - t0)             # first whole window
    hi = math.floor(last - t0) - 1         # last whole window
    return {k: cnt.get(k, 0) for k in range(lo, hi + 1)}


def t0_image(comp, t_req0, t_req1, slack):
    """Per 4 KiB block: 0 = golden at T0, 1 = fio's pattern at T0, 2 = either (a write in flight at T0).

    Writes completed before the establish request was sent are in T0; writes completed
    more than `slack` s (the run's worst completion latency) after its reply were issued
    after T0 and are not; the others may legitimately land on either side."""
    st = bytearray(C.size // BLK)
    a, b = t_req0 - 0.002, t_req1 + slack + 0.002      # log times are whole ms
    for t, off in comp:
        if t < a:
            st[off // BLK] = 1
        elif t <= b and st[off // BLK] == 0:
            st[off // BLK] = 2
    return st


def verify_image(stream, golden, st):
    """Compare a stream of the target with the expected T0 image; returns a dict of counts."""
    pat = PATTERN * (BLK // len(PATTERN))
    bad = {"golden_expected": 0, "pattern_expected": 0, "either_expected": 0}
    n = {0: 0, 1: 0, 2: 0}
    names = {0: "golden_expected", 1: "pattern_expected", 2: "either_expected"}
    chunk = 1 << 20
    i = 0
    with open(golden, "rb") as g:
        while True:
            gb = g.read(chunk)
            tb = stream.read(chunk)
            while len(tb) < len(gb):
                more = stream.read(len(gb) - len(tb))
                if not more:
                    break
                tb += more
            if not gb:
                break
            if len(tb) != len(gb):
                raise RuntimeError("target shorter than the golden file")
            if gb == tb and 1 not in st[i:i + len(gb) // BLK]:
                for k in st[i:i + len(gb) // BLK]:
                    n[k] += 1
                i += len(gb) // BLK
                continue
            for o in range(0, len(gb), BLK):
                k = st[i]
                n[k] += 1
                x = tb[o:o + BLK]
                ok = (x == gb[o:o + BLK]) if k == 0 else (x == pat) if k == 1 else (x == pat or x == gb[o:o + BLK])
                if not ok:
                    bad[names[k]] += 1
                i += 1
    return {"blocks": {names[k]: v for k, v in n.items()}, "mismatches": bad, "ok": not any(bad.values())}


def check_image(wl, system, what, src, golden, st):
    """src: a file path or an NBD URI (read with nbdcopy)."""
    if src.startswith("nbd://"):
        p = subprocess.Popen(["nbdcopy", src, "-"], stdout=subprocess.PIPE)
        try:
            r = verify_image(p.stdout, golden, st)
        finally:
            p.stdout.close()
            p.wait(timeout=300)
    else:
        with open(src, "rb") as fh:
            r = verify_image(fh, golden, st)
    exp = "T0 image (golden + fio pattern where written before T0)"
    got = exp if r["ok"] else f"mismatching 4 KiB blocks: {r['mismatches']}"
    check(wl, system, f"{what} ({r['blocks']})", exp, got)
    return r


def timeline_result(comp, t0, copy_done_abs=None):
    b = bins_from(comp, t0)
    d = {"timeline": [[k + 0.5, v] for k, v in sorted(b.items())]}
    pre = [v for k, v in b.items() if k < 0]
    pre = pre[1:] if len(pre) > 2 else pre          # first whole window: still warming up
    d["pre_T0_iops"] = round(statistics.mean(pre)) if pre else None
    d["first_second_iops"] = b.get(0)
    after = [v for k, v in b.items() if k >= 0]
    if copy_done_abs is not None:
        dur = copy_done_abs - t0
        during = [v for k, v in b.items() if 0 <= k and k < dur]             # windows overlapping the copy
        inside = [v for k, v in b.items() if 0 <= k and k + 1 <= dur]        # whole windows inside it
        sel = inside or during
        d["during_copy_iops"] = round(statistics.mean(sel)) if sel else None
        d["during_copy_windows"] = f"{len(sel)} {'whole' if inside else 'overlapping'} window(s)"
        d["min_after_T0_iops"] = min(during) if during else None
        post = [v for k, v in b.items() if k >= dur + 1]
        d["after_copy_iops"] = round(statistics.mean(post)) if post else None
    else:
        d["min_after_T0_iops"] = min(after) if after else None
    return d


def recovery_s(d, ref):
    """Seconds after T0 until 3 consecutive 1 s windows reach 90 % of ref."""
    if not ref:
        return None
    pts = [(t, v) for t, v in d["timeline"] if t > 0]
    for i in range(len(pts) - 2):
        if all(v >= 0.9 * ref for _, v in pts[i:i + 3]):
            return round(pts[i][0] - 0.5, 1)
    return None


def _slack(f):
    """Worst completion latency of the run, seconds (bounds how long a pre-T0 write can stay in flight)."""
    try:
        raw = open(f.json).read()
        j = json.loads(raw[raw.index("{"):])["jobs"][0]["write"]
        return j["clat_ns"]["max"] / 1e9
    except (OSError, ValueError, KeyError):
        return 1.0


def w2(tz, golden, gmd5):
    log("W2: 4k randwrite QD32 on the source, COPY established at t=pre under load")
    res = {}
    # ---- tzero
    tz.mkvol("w2s", C.size)
    tz.mkvol("w2t", C.size)
    tz.fill("w2s", golden)
    f = Fio("w2-tzero", tz.uri("w2s"), "randwrite", "4k", 32, runtime=C.w2_cap, per_io_log=True).start()
    time.sleep(C.pre)
    t0, tp = time.time(), time.perf_counter()
    js, est = tz.establish("w2s", "w2t", copy=True, persist=False)
    t1 = time.time()
    try:
        copy_s = tz.wait_copied("w2s", "w2t", tp, timeout=C.w2_cap - C.pre, poll=0.05)
        done = t0 + copy_s
        time.sleep(3.2)
    except TimeoutError:
        copy_s, done = None, None
        log("    tzero: copy not finished while fio ran")
    f.stop()
    comp = completions(f)
    d = timeline_result(comp, t0, done)
    d.update(establish_ms=round(est * 1000, 3), copy_s=copy_s and round(copy_s, 2),
             copy_done_s=copy_s and round(copy_s, 2), fio=f.summary())
    if copy_s is None:
        copy_s = tz.wait_copied("w2s", "w2t", tp, timeout=600)
        d["copy_s_after_fio_stopped"] = round(copy_s, 2)
    check_image("W2", "tzero", "target == source@T0 after the copy under load", tz.uri("w2t"), golden,
                t0_image(comp, t0, t1, _slack(f)))
    tz.rmvol("w2s", "w2t")
    res["tzero"] = d
    log(f"    tzero: pre {d['pre_T0_iops']} during {d.get('during_copy_iops')} min {d['min_after_T0_iops']} copy {d['copy_s']} s")
    # ---- QEMU
    q = QSD("w2", golden)
    try:
        f = Fio("w2-qemu", q.uri(), "randwrite", "4k", 32, runtime=C.w2_cap, per_io_log=True).start()
        time.sleep(C.pre)
        t0, tp = time.time(), time.perf_counter()
        est = q.establish("full")
        t1 = time.time()
        try:
            copy_s = q.wait_pending(tp, timeout=C.w2_cap - C.pre, poll=0.05)
            q.finalize()                      # like a non-persistent relationship: filter removed at once
            done = t0 + copy_s
            time.sleep(3.2)
        except TimeoutError:
            copy_s, done = None, None
        f.stop()
        comp = completions(f)
        d = timeline_result(comp, t0, done)
        d.update(establish_ms=round(est * 1000, 3), copy_s=copy_s and round(copy_s, 2),
                 copy_done_s=copy_s and round(copy_s, 2), fio=f.summary())
        if copy_s is None:
            d["copy_s_after_fio_stopped"] = round(q.wait_pending(tp), 2)
            q.finalize()
    finally:
        q.stop()
    check_image("W2", "qemu", "tgt.raw == source@T0 after the copy under load", q.tgt, golden,
                t0_image(comp, t0, t1, _slack(f)))
    res["qemu"] = d
    log(f"    qemu: pre {d['pre_T0_iops']} during {d.get('during_copy_iops')} min {d['min_after_T0_iops']} copy {d['copy_s']} s")
    RESULTS["workloads"]["W2"] = res


def w3(tz, golden, gmd5):
    log("W3: 4k randwrite QD32 on the source, NOCOPY established at t=pre under load")
    res = {}
    rt = C.pre + C.w3_post
    tz.mkvol("w3s", C.size)
    tz.mkvol("w3t", C.size)
    tz.fill("w3s", golden)
    f = Fio("w3-tzero", tz.uri("w3s"), "randwrite", "4k", 32, runtime=rt, per_io_log=True).start()
    time.sleep(C.pre)
    t0 = time.time()
    js, est = tz.establish("w3s", "w3t", copy=False)
    t1 = time.time()
    f.wait()
    comp = completions(f)
    d = timeline_result(comp, t0)
    d.update(establish_ms=round(est * 1000, 3), fio=f.summary())
    fl = tz.flash("w3s", "w3t")
    d["out_of_sync_tracks_at_end"] = fl and fl["out_of_sync_tracks"]
    d["total_tracks"] = fl and fl["total_tracks"]
    check_image("W3", "tzero", "NOCOPY target == source@T0 after the writes", tz.uri("w3t"), golden,
                t0_image(comp, t0, t1, _slack(f)))
    tz.withdraw("w3s", "w3t")
    tz.rmvol("w3s", "w3t")
    res["tzero"] = d
    log(f"    tzero: pre {d['pre_T0_iops']} first second {d['first_second_iops']} min {d['min_after_T0_iops']}")
    q = QSD("w3", golden)
    try:
        f = Fio("w3-qemu", q.uri(), "randwrite", "4k", 32, runtime=rt, per_io_log=True).start()
        time.sleep(C.pre)
        t0 = time.time()
        est = q.establish("none")
        t1 = time.time()
        f.wait()
        comp = completions(f)
        d = timeline_result(comp, t0)
        d.update(establish_ms=round(est * 1000, 3), fio=f.summary())
        q.add_view()
        check_image("W3", "qemu", "NOCOPY snapshot view == source@T0 after the writes", q.uri("snap"), golden,
                    t0_image(comp, t0, t1, _slack(f)))
        q.cancel()
    finally:
        q.stop()
    res["qemu"] = d
    log(f"    qemu: pre {d['pre_T0_iops']} first second {d['first_second_iops']} min {d['min_after_T0_iops']}")
    RESULTS["workloads"]["W3"] = res


def w4w5(tz, golden, gmd5):
    log("W4: idle background copy vs cp; W5: 4k randwrite with a persistent copied relationship")
    w4, w5 = {}, {}
    # ---- tzero
    tz.mkvol("w4s", C.size)
    tz.mkvol("w4t", C.size)
    tz.fill("w4s", golden)
    tp = time.perf_counter()
    js, est = tz.establish("w4s", "w4t", copy=True, persist=True)
    copy_s = tz.wait_copied("w4s", "w4t", tp, poll=0.005)
    w4["tzero"] = {"copy_s": round(copy_s, 3), "MiBps": round(C.size / MiB / copy_s, 1),
                   "establish_ms": round(est * 1000, 3)}
    check("W4", "tzero", "target == golden after the idle copy", gmd5, md5_nbd(tz.uri("w4t")))
    # the same bytes with cp, same run, same page-cache state (source just written)
    dst = os.path.join(C.work, "cp-copy.raw")
    sh(f"rm -f {dst}")
    t = time.perf_counter()
    sh(f"cp --reflink=never {golden} {dst}", timeout=300)
    cp_s = time.perf_counter() - t
    sh(f"sync {dst}", timeout=300)
    cps_s = time.perf_counter() - t
    sh(f"rm -f {dst}")
    w4["cp"] = {"copy_s": round(cp_s, 3), "MiBps": round(C.size / MiB / cp_s, 1), "cp_plus_sync_s": round(cps_s, 3)}
    log(f"    tzero copy {copy_s:.2f} s; cp {cp_s:.2f} s (cp+sync {cps_s:.2f} s)")
    # W5: relationship persistent and copied: host writes vs the baseline
    settle()
    w5["tzero"] = {"randwrite4k": Fio("w5-tzero", tz.uri("w4s"), "randwrite", "4k", 32, runtime=C.rt, ramp=C.ramp).run()}
    w5["tzero"]["sync_after_s"] = settle()
    fl = tz.flash("w4s", "w4t")
    w5["tzero"]["state"] = fl and fl["state"]
    check("W5", "tzero", "target still == golden after writes to the source", gmd5, md5_nbd(tz.uri("w4t")))
    tz.withdraw("w4s", "w4t")
    tz.rmvol("w4s", "w4t")
    log(f"    tzero W5 randwrite {w5['tzero']['randwrite4k']['iops']} IOPS")
    # ---- QEMU
    q = QSD("w4", golden)
    try:
        tp = time.perf_counter()
        est = q.establish("full")
        copy_s = q.wait_pending(tp, poll=0.005)
        w4["qemu"] = {"copy_s": round(copy_s, 3), "MiBps": round(C.size / MiB / copy_s, 1),
                      "establish_ms": round(est * 1000, 3)}
        # W5 for QEMU: the copy is done, the CBW filter is still in (job pending, not finalized)
        settle()
        w5["qemu"] = {"randwrite4k": Fio("w5-qemu", q.uri(), "randwrite", "4k", 32, runtime=C.rt, ramp=C.ramp).run()}
        w5["qemu"]["sync_after_s"] = settle()
        q.finalize()
    finally:
        q.stop()
    check("W4", "qemu", "tgt.raw == golden after the copy (+W5 writes to the source)", gmd5, md5_file(q.tgt))
    log(f"    qemu copy {copy_s:.2f} s; W5 randwrite {w5['qemu']['randwrite4k']['iops']} IOPS")
    RESULTS["workloads"]["W4"] = w4
    RESULTS["workloads"]["W5"] = w5


def w6(tz, golden, gmd5):
    log(f"W6: 4k randread QD32 on the target during a copy limited to {C.w6_rate // MiB} MiB/s")
    res = {}
    tz.mkvol("w6s", C.size)
    tz.mkvol("w6t", C.size)
    tz.fill("w6s", golden)
    tz.establish("w6s", "w6t", copy=True, persist=True, rate=C.w6_rate)
    r = Fio("w6-tzero", tz.uri("w6t"), "randread", "4k", 32, runtime=C.rt, ramp=C.ramp).run()
    fl = tz.flash("w6s", "w6t")
    r["copied_fraction_at_end"] = fl and round(1 - fl["out_of_sync_tracks"] / fl["total_tracks"], 3)
    r["state_at_end"] = fl and fl["state"]
    check("W6", "tzero", "target export == golden while the copy runs", gmd5, md5_nbd(tz.uri("w6t")))
    tz.withdraw("w6s", "w6t")
    tz.rmvol("w6s", "w6t")
    res["tzero"] = r
    log(f"    tzero target randread {r['iops']} IOPS (copied {r['copied_fraction_at_end']})")
    q = QSD("w6", golden)
    try:
        q.establish("full", speed=C.w6_rate)
        q.add_view()
        r = Fio("w6-qemu", q.uri("snap"), "randread", "4k", 32, runtime=C.rt, ramp=C.ramp).run()
        j = q.job()
        r["copied_fraction_at_end"] = j and round(j["current-progress"] / max(1, j["total-progress"]), 3)
        r["state_at_end"] = j and j["status"]
        check("W6", "qemu", "snapshot view == golden while the copy runs", gmd5, md5_nbd(q.uri("snap")))
        q.cancel()
    finally:
        q.stop()
    res["qemu"] = r
    log(f"    qemu snapshot randread {r['iops']} IOPS (copied {r['copied_fraction_at_end']})")
    RESULTS["workloads"]["W6"] = res


def tzero_has_resync():
    h = subprocess.run([C.tzero, "--help"], capture_output=True, text=True, timeout=30).stdout
    return "resyncflash" in h


def w7(tz, golden, gmd5):
    if not tzero_has_resync():
        RESULTS["workloads"]["W7"] = {"pending": "tzero resyncflash not implemented"}
        log("W7: pending (no resyncflash)")
        return
    log(f"W7: incremental resync after {C.w7_ios} random 4k writes")
    res = {}
    tz.mkvol("w7s", C.size)
    tz.mkvol("w7t", C.size)
    tz.fill("w7s", golden)
    tp = time.perf_counter()
    tz.establish("w7s", "w7t", copy=True, persist=True, record=True)
    full_s = tz.wait_copied("w7s", "w7t", tp, poll=0.005)
    Fio("w7-tzero-writes", tz.uri("w7s"), "randwrite", "4k", 32, number_ios=C.w7_ios).run()
    t1md5 = md5_nbd(tz.uri("w7s"))
    fl = tz.flash("w7s", "w7t")
    changed = fl and fl.get("changed_tracks")
    tp = time.perf_counter()
    _, rs = tz.ok("POST", "/v1/flash/w7s/w7t/resync", {})
    resync_s = tz.wait_copied("w7s", "w7t", tp, poll=0.002)
    res["tzero"] = {"full_copy_s": round(full_s, 3), "changed_tracks": changed,
                    "changed_MiB": changed and round(changed * fl["track_size"] / MiB, 1),
                    "resync_request_ms": round(rs * 1000, 3), "resync_s": round(resync_s, 3)}
    check("W7", "tzero", "target == source@T1 after the incremental resync", t1md5, md5_nbd(tz.uri("w7t")))
    tz.withdraw("w7s", "w7t")
    tz.rmvol("w7s", "w7t")
    log(f"    tzero: {res['tzero']}")
    q = QSD("w7", golden)
    try:
        tp = time.perf_counter()
        q.q.execute("transaction", actions=[
            {"type": "block-dirty-bitmap-add", "data": {"node": "src", "name": "fcinc"}},
            {"type": "blockdev-backup", "data": {"job-id": "fc", "device": "src", "target": "tgt", "sync": "full",
                                                 "auto-finalize": False, "auto-dismiss": False}}])
        full_s = q.wait_pending(tp, poll=0.005)
        q.finalize()
        Fio("w7-qemu-writes", q.uri(), "randwrite", "4k", 32, number_ios=C.w7_ios).run()
        t1md5q = md5_nbd(q.uri())
        dirty = None
        for nd in q.q.execute("query-named-block-nodes"):
            for bmp in nd.get("dirty-bitmaps") or []:
                if bmp.get("name") == "fcinc":
                    dirty = bmp.get("count")
        tp = time.perf_counter()
        _, rs = q.q.timed("blockdev-backup", **{"job-id": "fc", "device": "src", "target": "tgt", "sync": "bitmap",
                                              "bitmap": "fcinc", "bitmap-mode": "on-success",
                                              "auto-finalize": False, "auto-dismiss": False})
        resync_s = q.wait_pending(tp, poll=0.002)
        q.finalize()
        res["qemu"] = {"full_copy_s": round(full_s, 3), "dirty_MiB": dirty and round(dirty / MiB, 1),
                       "resync_request_ms": round(rs * 1000, 3), "resync_s": round(resync_s, 3)}
    finally:
        q.stop()
    check("W7", "qemu", "tgt.raw == source@T1 after the incremental backup", t1md5q, md5_file(q.tgt))
    log(f"    qemu: {res['qemu']}")
    RESULTS["workloads"]["W7"] = res


# ----------------------------------------------------------------------------- summary
def ratio(a, b, nd=2):
    return round(a / b, nd) if a is not None and b else None


def summarize():
    W = RESULTS["workloads"]
    rows = []   # (workload, metric, tzero, qemu, tz/qemu, tz frac, qemu frac, goal, met)

    def row(wl, metric, tz, qe, tzf=None, qef=None, goal="", met=None, unit="", ratio_v="auto"):
        rv = ratio(tz, qe) if ratio_v == "auto" else ratio_v
        rows.append({"workload": wl, "metric": metric, "tzero": tz, "qemu": qe, "unit": unit,
                     "tzero_over_qemu": rv, "tzero_frac_own_baseline": tzf, "qemu_frac_own_baseline": qef,
                     "goal": goal, "met": met})

    i3 = W.get("issue3", {})
    qb = W.get("qsd_baseline", {})
    tzb = i3.get("tzero", {})
    for name, _, _, _ in FIO_BASE:
        if name in tzb and name in i3.get("qemu_nbd_none", {}):
            a, b = tzb[name], i3["qemu_nbd_none"][name]
            key = "iops" if "4k" in name else "MiBps"
            r = ratio(a[key], b[key])
            wb = i3.get("qemu_nbd_writeback", {}).get(name, {}).get(key)
            sy = (f"; `sync` after the run: tzero {a.get('sync_after_s')} s, qemu-nbd none {b.get('sync_after_s')} s"
                  if "write" in name and a.get("sync_after_s") is not None else "")
            row("issue 3", f"{name} ({'IOPS' if key == 'iops' else 'MiB/s'}) vs qemu-nbd cache=none"
                + (f"; qemu-nbd writeback: {wb}" if wb else "") + sy, a[key], b[key],
                goal="≥ 1.0× qemu-nbd", met=r is not None and r >= 1.0)
    tz_rw = tzb.get("randwrite4k", {}).get("iops")
    tz_rr = tzb.get("randread4k", {}).get("iops")
    q_rw = qb.get("randwrite4k", {}).get("iops")
    q_rr = qb.get("randread4k", {}).get("iops")
    if qb:
        row("baseline", "4k randwrite IOPS, no relationship (own baseline: tzero export / QSD export)", tz_rw, q_rw)
        row("baseline", "4k randread IOPS, no relationship (own baseline)", tz_rr, q_rr)
    if "W1" in W:
        t, q = W["W1"]["tzero"], W["W1"]["qemu"]
        for k, label in (("nocopy_idle_ms", "NOCOPY idle"), ("copy_idle_ms", "COPY idle"),
                         ("nocopy_load_ms", "NOCOPY under 4k randwrite"), ("copy_load_ms", "COPY under 4k randwrite")):
            v = t.get(k)
            row("W1", f"establish {label}, median of {C.reps} (ms); QEMU +view add: {q.get(k.replace('_ms', '_view_add_ms'))} ms",
                v, q.get(k), goal="≤ 1 ms", met=v is not None and v <= 1.0)
        for k, label in (("nocopy_1TiB_idle_ms", "NOCOPY idle, 1 TiB sparse"), ("copy_1TiB_idle_ms", "COPY idle, 1 TiB sparse")):
            v = t.get(k)
            row("W1", f"establish {label} (ms), tzero only", v, None, goal="≤ 1 ms", met=v is not None and v <= 1.0)
    for k in ("W2", "W3"):
        if k in W:
            W[k].get("tzero", {})["baseline_iops"] = tz_rw
            W[k].get("qemu", {})["baseline_iops"] = q_rw
    if "W2" in W:
        t, q = W["W2"]["tzero"], W["W2"]["qemu"]
        tf, qf = ratio(t.get("during_copy_iops"), tz_rw), ratio(q.get("during_copy_iops"), q_rw)
        row("W2", "4k randwrite IOPS during the full copy (mean of 1 s windows)", t.get("during_copy_iops"),
            q.get("during_copy_iops"), tf, qf, "≥ 50 % of own baseline", tf is not None and tf >= 0.5)
        row("W2", "worst 1 s window after T0 (IOPS)", t.get("min_after_T0_iops"), q.get("min_after_T0_iops"),
            ratio(t.get("min_after_T0_iops"), tz_rw), ratio(q.get("min_after_T0_iops"), q_rw))
        row("W2", "copy time under load (s)", t.get("copy_s"), q.get("copy_s"))
        row("W2", "establish under load (ms)", t.get("establish_ms"), q.get("establish_ms"))
    if "W3" in W:
        t, q = W["W3"]["tzero"], W["W3"]["qemu"]
        tf, qf = ratio(t.get("first_second_iops"), tz_rw), ratio(q.get("first_second_iops"), q_rw)
        row("W3", "4k randwrite IOPS, first 1 s window after T0", t.get("first_second_iops"),
            q.get("first_second_iops"), tf, qf, "≥ 50 % of own baseline", tf is not None and tf >= 0.5)
        row("W3", "worst 1 s window after T0 (IOPS)", t.get("min_after_T0_iops"), q.get("min_after_T0_iops"),
            ratio(t.get("min_after_T0_iops"), tz_rw), ratio(q.get("min_after_T0_iops"), q_rw))
        t["recovery_s"], q["recovery_s"] = recovery_s(t, tz_rw), recovery_s(q, q_rw)
        row("W3", "recovery: s after T0 until 3 windows ≥ 90 % of own baseline", t["recovery_s"], q["recovery_s"])
    if "W4" in W:
        t, q, cp = W["W4"].get("tzero", {}), W["W4"].get("qemu", {}), W["W4"].get("cp", {})
        rc = ratio(t.get("copy_s"), cp.get("copy_s"))
        row("W4", f"idle background copy of {C.size // MiB} MiB (s); cp --reflink=never: {cp.get('copy_s')} s, "
            f"cp+sync: {cp.get('cp_plus_sync_s')} s", t.get("copy_s"), q.get("copy_s"), rc,
            ratio(q.get("copy_s"), cp.get("copy_s")), "≤ 1.1× cp (fraction columns: × cp)", rc is not None and rc <= 1.1)
    if "W5" in W:
        t, q = W["W5"]["tzero"]["randwrite4k"]["iops"], W["W5"]["qemu"]["randwrite4k"]["iops"]
        tf, qf = ratio(t, tz_rw), ratio(q, q_rw)
        row("W5", "4k randwrite IOPS, relationship copied and kept (QEMU: CBW filter still in)", t, q, tf, qf,
            "≥ 0.95 of own baseline", tf is not None and tf >= 0.95)
    if "W6" in W:
        t, q = W["W6"]["tzero"]["iops"], W["W6"]["qemu"]["iops"]
        r = ratio(t, q)
        row("W6", f"4k randread IOPS on the target during a {C.w6_rate // MiB} MiB/s copy", t, q,
            ratio(t, tz_rr), ratio(q, q_rr), "≥ 1.0× QEMU", r is not None and r >= 1.0)
    if "W7" in W:
        w = W["W7"]
        if "pending" in w:
            row("W7", "incremental resync", None, None, goal="pending: " + w["pending"])
        else:
            row("W7", f"resync after {C.w7_ios} random 4k writes: time to copied (s); changed "
                f"{w['tzero'].get('changed_MiB')} MiB (tzero), {w['qemu'].get('dirty_MiB')} MiB dirty (QEMU)",
                w["tzero"]["resync_s"], w["qemu"]["resync_s"])
    RESULTS["summary"] = rows
    return rows


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def write_md(rows):
    ok = all(c["ok"] for c in RESULTS["checks"])
    L = [f"# tzero vs QEMU under load — {RESULTS['date']}", "",
         f"Command: `{RESULTS['command']}` ({'quick' if C.quick else 'full'} mode, volume {C.size // MiB} MiB, "
         f"fio {C.rt} s + {C.ramp} s ramp). {RESULTS['versions']}", "",
         "| workload | metric | tzero | QEMU | tzero/QEMU | tzero ÷ own baseline | QEMU ÷ own baseline | goal | met |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        L.append(f"| {r['workload']} | {r['metric']} | {fmt(r['tzero'])} | {fmt(r['qemu'])} | {fmt(r['tzero_over_qemu'])} "
                 f"| {fmt(r['tzero_frac_own_baseline'])} | {fmt(r['qemu_frac_own_baseline'])} | {r['goal']} | {met} |")
    L += ["", f"Data checks: {sum(c['ok'] for c in RESULTS['checks'])}/{len(RESULTS['checks'])} passed"
          + ("" if ok else " — **FAILED**"), ""]
    for c in RESULTS["checks"]:
        L.append(f"- {'ok' if c['ok'] else 'FAILED'}: {c['workload']} {c['system']}: {c['what']}")
    if RESULTS["errors"]:
        L += ["", "Errors:"] + [f"- {e}" for e in RESULTS["errors"]]
    L += ["", "Plots: `w2_timeline.png`, `w3_timeline.png`.", ""]
    open(os.path.join(C.out, "results.md"), "w").write("\n".join(L))


def versions():
    def v(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            return "?"
    rev = v("git -C %s rev-parse --short HEAD" % os.path.dirname(HERE))
    dirty = v("git -C %s status --porcelain -- crates | head -1" % os.path.dirname(HERE))
    note = os.environ.get("BENCH_BUILD_NOTE")
    bin_t = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(C.tzero)))
    return (f"tzero {rev}{' + uncommitted crates/ changes' if dirty and dirty != '?' else ''} "
            f"(binary built {bin_t}{'; ' + note if note else ''}); "
            f"{v('qemu-storage-daemon --version')}; {v('fio --version')}; {v('nbdcopy --version')}; "
            f"kernel {platform.release()}; {os.cpu_count()} CPUs")


# ----------------------------------------------------------------------------- main
def golden_file():
    g = os.path.join(C.work, f"golden-{C.size // MiB}M.raw")
    if not (os.path.exists(g) and os.path.getsize(g) == C.size and os.path.exists(g + ".md5")):
        log(f"making the golden file {g} ({C.size // MiB} MiB from /dev/urandom)")
        sh(f"head -c {C.size} /dev/urandom > {g}.tmp && mv {g}.tmp {g}", timeout=300)
        open(g + ".md5", "w").write(md5_file(g))
    h = open(g + ".md5").read().strip()
    got = md5_file(g)
    if got != h:
        raise RuntimeError(f"golden file changed on disk: {got} != {h}")
    return g, h


def main():
    global C
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tzero", required=True)
    ap.add_argument("--only", help="comma list: issue3,qsdbase,W1,W2,W3,W4,W6,W7 (W4 includes W5)")
    ap.add_argument("--command", default="bench/run.sh")
    a = ap.parse_args()
    C = Cfg(a)
    t_start = time.time()
    RESULTS.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command=a.command, quick=C.quick,
                   size_bytes=C.size, fio_runtime_s=C.rt, fio_ramp_s=C.ramp, versions=versions())
    golden, gmd5 = golden_file()
    RESULTS["golden_md5"] = gmd5
    log(f"golden {golden} md5 {gmd5}")
    tz = Tzero()
    failed = False
    try:
        for name, fn in (("issue3", lambda: w_issue3(tz, golden)), ("qsdbase", lambda: w_qsdbase(golden)),
                         ("W1", lambda: w1(tz, golden, gmd5)), ("W2", lambda: w2(tz, golden, gmd5)),
                         ("W3", lambda: w3(tz, golden, gmd5)), ("W4", lambda: w4w5(tz, golden, gmd5)),
                         ("W6", lambda: w6(tz, golden, gmd5)), ("W7", lambda: w7(tz, golden, gmd5))):
            if not C.want(name):
                continue
            settle()
            t = time.time()
            try:
                fn()
            except Exception as e:       # record, go on with the next workload
                import traceback
                traceback.print_exc()
                RESULTS["errors"].append(f"{name}: {type(e).__name__}: {e}")
                failed = True
            log(f"  ({name} took {time.time() - t:.0f} s)")
    finally:
        tz.stop()
        RESULTS["elapsed_s"] = round(time.time() - t_start)
        rows = summarize()
        json.dump(RESULTS, open(os.path.join(C.out, "results.json"), "w"), indent=1)
        write_md(rows)
    bad = [c for c in RESULTS["checks"] if not c["ok"]]
    print(open(os.path.join(C.out, "results.md")).read())
    if bad:
        print("\n" + "!" * 78 + f"\n!!! DATA CORRUPTION: {len(bad)} check(s) failed — these figures are not valid\n"
              + "\n".join(f"!!!   {c['workload']}/{c['system']}: {c['what']}" for c in bad) + "\n" + "!" * 78)
        sys.exit(3)
    if failed or RESULTS["errors"]:
        print("some workloads failed: " + "; ".join(RESULTS["errors"]))
        sys.exit(2)
    log(f"done in {RESULTS['elapsed_s']} s")


if __name__ == "__main__":
    main()

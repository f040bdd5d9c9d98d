#!/usr/bin/env python3
"""tzero on Ceph (serve --backend ceph) beside qemu-nbd serving the same pool through librbd.

Run by `bench/run.sh --backend ceph`. On the 3-OSD loopback cluster of scripts/ceph-cluster.sh
(started here unless --conf names one):
  plain   4k randread and randwrite QD32 (fio ioengine=nbd) on a prefilled volume, tzero vs
          qemu-nbd with the rbd driver (cache=none), as the ratio tzero / qemu-nbd;
  W1      establish latency through the API (unix socket), NOCOPY, median of 20, idle;
  W2      4k randwrite QD32 while a full COPY of the volume runs, against tzero's own baseline
          (mean and worst 1 s window);
  W3      4k randwrite QD32 right after a NOCOPY establish: the first 1 s window against the
          baseline, and the seconds until a window is back at >= 90 %.
Writes results.json and results.md under --out.
"""
import argparse, http.client, json, os, socket, statistics, subprocess, sys, time

HOST = "127.0.0.1"
MiB = 1 << 20


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def sh(cmd, timeout=600):
    return subprocess.run(cmd, shell=True, check=True, timeout=timeout, capture_output=True, text=True).stdout


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=120)
        self.path_ = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path_)
        self.sock = s


def fio(name, uri, rw, args, runtime, out):
    """One fio run; (IOPS, [per-second IOPS])."""
    base = os.path.join(out, name)
    cmd = ["fio", f"--name={name}", "--ioengine=nbd", f"--uri={uri}", f"--size={args.size}",
           f"--rw={rw}", "--bs=4k", "--iodepth=32", "--numjobs=1", "--randrepeat=0", "--norandommap",
           "--time_based", f"--runtime={runtime}", "--output-format=json", f"--output={base}.json",
           # Despite its name, this logs the IOPS of reads too.
           f"--write_iops_log={base}",
           "--log_avg_msec=1000"]
    subprocess.run(cmd, check=True, timeout=runtime + 120, capture_output=True)
    raw = open(base + ".json").read()
    j = json.loads(raw[raw.index("{"):])["jobs"][0]
    k = "write" if j["write"]["io_bytes"] else "read"
    windows = []
    log_file = base + "_iops.1.log"
    if os.path.exists(log_file):
        windows = [int(l.split(",")[1]) for l in open(log_file) if l.count(",") >= 2]
    return round(j[k]["iops"]), windows


class Tzero:
    def __init__(self, args, work, prefix):
        self.data = os.path.join(work, "tzero-data")
        sh(f"rm -rf {self.data}")
        os.makedirs(self.data)
        self.nbd, self.api = args.port, args.port + 1
        self.p = subprocess.Popen(
            [args.tzero, "serve", "--data", self.data, "--nbd", f"{HOST}:{self.nbd}", "--api", f"{HOST}:{self.api}",
             "--backend", "ceph", "--ceph-conf", args.conf, "--pool", args.pool, "--ceph-prefix", prefix],
            stdout=open(os.path.join(work, "tzero.log"), "w"), stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG="warn"))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.conn = UnixHTTP(os.path.join(self.data, "tzero.sock"))
                self.req("GET", "/v1/volumes")
                return
            except (OSError, http.client.HTTPException):
                if self.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tzero did not start; see tzero.log")
                time.sleep(0.1)

    def req(self, method, path, body=None):
        t = time.perf_counter()
        self.conn.request(method, path, body=json.dumps(body) if body is not None else None,
                          headers={"content-type": "application/json"} if body is not None else {})
        r = self.conn.getresponse()
        raw = r.read()
        dt = time.perf_counter() - t
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {raw[:200]}")
        return (json.loads(raw) if raw else None), dt

    def uri(self, vol):
        return f"nbd://{HOST}:{self.nbd}/{vol}"

    def flash(self, src, tgt):
        try:
            return self.req("GET", f"/v1/flash/{src}/{tgt}")[0]
        except RuntimeError:
            return None

    def stop(self):
        self.p.terminate()
        self.p.wait(timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tzero", required=True)
    ap.add_argument("--conf", help="ceph.conf of a running cluster (default: start one)")
    ap.add_argument("--pool", default="tzero")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runtime", type=int, default=15)
    ap.add_argument("--port", type=int, default=23809)
    ap.add_argument("--work", default="/work/bench-ceph")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bench/run.sh --backend ceph")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cluster = None
    if not args.conf:
        cluster = os.path.join(args.work, "cluster")
        sh(f"{root}/scripts/ceph-cluster.sh stop {cluster} --purge")
        log("starting the Ceph cluster (3 mons, 3 BlueStore OSDs)")
        log(sh(f"{root}/scripts/ceph-cluster.sh start {cluster}", timeout=300).strip().splitlines()[-1])
        args.conf = os.path.join(cluster, "ceph.conf")
    stamp = time.strftime("%H%M%S")
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": args.command,
           "commit": sh(f"git -C {root} rev-parse --short HEAD").strip(), "size": args.size,
           "runtime_s": args.runtime}
    qemu = None
    tz = None
    try:
        # The peer: qemu-nbd serving an RBD image of the same pool through librbd.
        qimg = f"bench-qemu-{stamp}"
        sh(f"rbd -c {args.conf} create {args.pool}/{qimg} --size {args.size} "
           "--image-feature layering,exclusive-lock,object-map,fast-diff")
        qport = args.port + 5
        qemu = subprocess.Popen(["qemu-nbd", "-f", "raw", "--cache=none", "-b", HOST, "-p", str(qport), "-x", "q",
                                 "--persistent", "--shared=8", f"rbd:{args.pool}/{qimg}:conf={args.conf}"],
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(args.work, "qemu-nbd.log"), "w"))
        tz = Tzero(args, args.work, f"bench-{stamp}.")
        tz.req("POST", "/v1/volumes", {"name": "vol", "capacity_bytes": int(sh(f"numfmt --from=iec {args.size}"))})
        for _ in range(100):
            try:
                socket.create_connection((HOST, qport), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        quri, turi = f"nbd://{HOST}:{qport}/q", tz.uri("vol")
        if qemu.poll() is not None:
            # Debian's qemu-utils loads rbd as a module (qemu-block-extra); without it there is no peer.
            res["peer"] = "qemu-nbd could not open rbd: (no rbd block module for this qemu); tzero alone"
            log("  !!! " + res["peer"])
            quri = None
        log("prefilling the volumes (1M sequential writes)")
        for uri in [u for u in (quri, turi) if u]:
            subprocess.run(["fio", "--name=fill", "--ioengine=nbd", f"--uri={uri}", f"--size={args.size}",
                            "--rw=write", "--bs=1M", "--iodepth=8", "--output=/dev/null"], check=True, timeout=900)
        plain = {}
        for rw in ("randread", "randwrite"):
            q, _ = fio(f"qemu-{rw}", quri, rw, args, args.runtime, args.out) if quri else (None, [])
            t, _ = fio(f"tzero-{rw}", turi, rw, args, args.runtime, args.out)
            plain[rw] = {"qemu_nbd_librbd": q, "tzero": t, "ratio": round(t / q, 3) if q else None}
            log(f"  plain {rw}: tzero {t} IOPS, qemu-nbd+librbd {q} IOPS, ratio {plain[rw]['ratio']}")
        res["plain"] = plain
        base = plain["randwrite"]["tzero"]
        # W1: establish (NOCOPY) and withdraw, 20 times, idle.
        cap = int(sh(f"numfmt --from=iec {args.size}"))
        tz.req("POST", "/v1/volumes", {"name": "w1t", "capacity_bytes": cap})
        lat = []
        for _ in range(20):
            _, dt = tz.req("POST", "/v1/flash", {"source": "vol", "target": "w1t", "background_copy": False,
                                                 "persistent": False, "copy_rate": 0, "recording": False})
            lat.append(dt * 1000)
            tz.req("DELETE", "/v1/flash/vol/w1t")
        res["W1"] = {"median_ms": round(statistics.median(lat), 2), "max_ms": round(max(lat), 2)}
        log(f"  W1 establish: median {res['W1']['median_ms']} ms")
        # W2: randwrite during a full COPY.
        tz.req("POST", "/v1/volumes", {"name": "w2t", "capacity_bytes": cap})
        tz.req("POST", "/v1/flash", {"source": "vol", "target": "w2t", "background_copy": True,
                                     "persistent": False, "copy_rate": 0, "recording": False})
        t0 = time.time()
        iops, windows = fio("w2", turi, "randwrite", args, args.runtime, args.out)
        still = tz.flash("vol", "w2t")
        res["W2"] = {"iops": iops, "of_baseline": round(iops / base, 3),
                     "worst_1s_of_baseline": round(min(windows) / base, 3) if windows else None,
                     "copy_still_running_at_end": bool(still and still.get("state") != "copied"),
                     "fio_s": round(time.time() - t0, 1)}
        log(f"  W2: {res['W2']}")
        deadline = time.monotonic() + 600
        while tz.flash("vol", "w2t") and time.monotonic() < deadline:
            time.sleep(0.5)
        # W3: randwrite right after a NOCOPY establish.
        tz.req("POST", "/v1/volumes", {"name": "w3t", "capacity_bytes": cap})
        tz.req("POST", "/v1/flash", {"source": "vol", "target": "w3t", "background_copy": False,
                                     "persistent": False, "copy_rate": 0, "recording": False})
        iops, windows = fio("w3", turi, "randwrite", args, args.runtime, args.out)
        back = next((i + 1 for i, w in enumerate(windows) if w >= 0.9 * base), None)
        res["W3"] = {"iops": iops, "first_1s_of_baseline": round(windows[0] / base, 3) if windows else None,
                     "s_until_90pct": back, "windows": windows}
        log(f"  W3: {res['W3']}")
    finally:
        if tz:
            tz.stop()
        if qemu and qemu.poll() is None:
            qemu.terminate()
            qemu.wait()
        if cluster:
            sh(f"{root}/scripts/ceph-cluster.sh stop {cluster} --purge")
    json.dump(res, open(os.path.join(args.out, "results.json"), "w"), indent=1)
    p = res["plain"]
    md = [f"# tzero on Ceph vs qemu-nbd + librbd ({res['date']}, commit {res['commit']})", "",
          f"`{res['command']}`: {res['size']} volume, fio nbd engine, 4k QD32, {res['runtime_s']} s per run, "
          "3-OSD loopback cluster (size 3 / min_size 2) on the same 2 cores.", "",
          "| case | tzero | qemu-nbd + librbd | ratio |", "|---|---|---|---|"]
    for rw in ("randread", "randwrite"):
        md.append(f"| 4k {rw} QD32 (IOPS) | {p[rw]['tzero']} | {p[rw]['qemu_nbd_librbd']} | {p[rw]['ratio']} |")
    md += ["", f"- W1 establish (API, idle): median {res['W1']['median_ms']} ms, max {res['W1']['max_ms']} ms",
           f"- W2 randwrite during a full COPY: {res['W2']['of_baseline']} of baseline, worst 1 s "
           f"{res['W2']['worst_1s_of_baseline']} (copy still running at the end: {res['W2']['copy_still_running_at_end']})",
           f"- W3 randwrite after a NOCOPY establish: first 1 s {res['W3']['first_1s_of_baseline']} of baseline, "
           f"back at >= 90 % after {res['W3']['s_until_90pct']} s"]
    open(os.path.join(args.out, "results.md"), "w").write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())

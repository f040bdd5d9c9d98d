#!/usr/bin/env python3
"""Profiling helper for the misses of bench/run.sh (not part of the suite).

  bench/profile.py establish   strace -T of the daemon's syncs around one NOCOPY establish under
                               4k randwrite load (why W1/W2/W3 stall host writes)
  bench/profile.py perf-w2     perf record -g of the daemon during W2 (COPY under load)
  bench/profile.py perf-w5     perf record -g of the daemon during 4k randwrite with a copied,
                               persistent relationship (W5)
Output in $BENCH_WORK/profile/. Same volumes and ports as the suite (quick size unless FULL=1).
"""
import os, subprocess, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fcbench as fb

def main():
    what = sys.argv[1]
    work = os.environ.get("BENCH_WORK", "/work/bench-run")
    a = type("A", (), dict(quick=not os.environ.get("FULL"), work=work, out=os.path.join(work, "profile"),
                           tzero=os.environ.get("TZERO_BIN", "/work/target-bench/release/tzero"), only=None))
    fb.C = fb.Cfg(a)
    prof = fb.C.out
    golden, _ = fb.golden_file()
    tz = fb.Tzero()
    try:
        tz.mkvol("ps", fb.C.size); tz.mkvol("pt", fb.C.size); tz.fill("ps", golden)
        if what == "establish":
            f = fb.Fio("prof-load", tz.uri("ps"), "randwrite", "4k", 32, runtime=12).start()
            time.sleep(4)
            st = subprocess.Popen(["strace", "-f", "-T", "-tt", "-e", "trace=fsync,fdatasync,sync_file_range,pwrite64,pwritev,copy_file_range",
                                   "-o", f"{prof}/strace-establish.txt", "-p", str(tz.p.pid)])
            time.sleep(1)
            t0 = time.time(); _, dt = tz.establish("ps", "pt", copy=False); print(f"establish {dt*1000:.1f} ms at {t0:.3f}")
            time.sleep(1)
            st.terminate(); st.wait()
            f.wait()
        elif what in ("perf-w2", "perf-w5"):
            if what == "perf-w5":
                tp = time.perf_counter(); tz.establish("ps", "pt", copy=True, persist=True)
                print("copied in", tz.wait_copied("ps", "pt", tp))
            f = fb.Fio("prof-load", tz.uri("ps"), "randwrite", "4k", 32, runtime=14).start()
            time.sleep(3)
            pr = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", f"{prof}/{what}.data", "-p", str(tz.p.pid),
                                   "--", "sleep", "8"])
            if what == "perf-w2":
                time.sleep(0.5); _, dt = tz.establish("ps", "pt", copy=True); print(f"establish {dt*1000:.1f} ms")
            pr.wait()
            r = f.wait(); print("fio", r)
            os.system(f"perf report -i {prof}/{what}.data --no-children --stdio --sort dso,sym 2>/dev/null | grep -v '^#' | grep '%' | head -40 > {prof}/{what}-top.txt")
            print(open(f"{prof}/{what}-top.txt").read())
    finally:
        tz.stop()

if __name__ == "__main__":
    main()

#!/bin/bash
# tzero vs QEMU (qemu-nbd, qemu-storage-daemon) under the same workloads, in one run.
#
#   bench/run.sh           full suite: 2 GiB volumes, 12 s fio runs   (~15 min)
#   bench/run.sh --quick   smoke run: 256 MiB volumes, 4 s fio runs    (~3 min)
#   TZERO_BIN=/path/to/tzero bench/run.sh   use that binary, build nothing
#   bench/run.sh --only W2,W3   some workloads only (issue3,qsdbase,W1,W2,W3,W4,W6,W7; W4 includes W5)
#   bench/run.sh --backend ceph  tzero on a 3-OSD loopback Ceph cluster vs qemu-nbd + librbd on the
#                           same pool: plain 4k randread/randwrite QD32, W1, W2, W3 (bench/ceph_bench.py;
#                           CEPH_CONF=FILE uses a running cluster; output in bench/out/ceph/)
#
# Needs: fio, nbdcopy/nbdinfo (libnbd-bin), qemu-nbd + qemu-storage-daemon, cargo.
#   apt-get install -y fio libnbd-bin nbdkit qemu-utils
# Scratch files go to $BENCH_WORK (default /work/bench-run: a real disk, not tmpfs; ~7 GB at peak).
# Output: bench/out/results.json, results.md, w2_timeline.png, w3_timeline.png.
# Exit status: 0 ok, 2 a workload failed, 3 a data check failed (the figures are then invalid).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
WORK=${BENCH_WORK:-/work/bench-run}
OUT=${BENCH_OUT:-$HERE/out}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
QUICK=""; ONLY=""; BACKEND=file
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=--quick ;;
    --only) ONLY="$2"; shift ;;
    --backend) BACKEND="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--only LIST] [--backend file|ceph]" >&2; exit 64 ;;
  esac
  shift
done

for t in fio nbdcopy nbdinfo qemu-nbd qemu-storage-daemon python3 cargo md5sum; do
  command -v $t >/dev/null || { echo "missing tool: $t (apt-get install -y fio libnbd-bin nbdkit qemu-utils)" >&2; exit 1; }
done
case "$(df --output=fstype "$(dirname "$WORK")" | tail -1)" in
  tmpfs|ramfs) echo "BENCH_WORK=$WORK is on tmpfs: use a directory on a real disk" >&2; exit 1 ;;
esac
mkdir -p "$WORK" "$OUT"

echo "== building tzero (release) and the plot tool into $CARGO_TARGET_DIR"
TZERO=${TZERO_BIN:-$CARGO_TARGET_DIR/release/tzero}
BUILD_NOTE=""
if [ -z "${TZERO_BIN:-}" ]; then
  if ! (cd "$ROOT" && timeout 1200 cargo build --release -q -p tzero); then
    # crates/ is edited concurrently: a tree that does not build right now must not stop the run
    [ -x "$TZERO" ] || { echo "tzero does not build and there is no earlier binary" >&2; exit 1; }
    BUILD_NOTE="the tree did not build; used the earlier binary of $(date -r "$TZERO" '+%F %T')"
    echo "!!! WARNING: $BUILD_NOTE" >&2
  fi
fi
export BENCH_BUILD_NOTE="$BUILD_NOTE"
(cd "$HERE/plot" && timeout 1200 cargo build --release -q)
PLOT=$CARGO_TARGET_DIR/release/tzero-bench-plot

if [ "$BACKEND" = ceph ]; then
  exec python3 "$HERE/ceph_bench.py" --tzero "$TZERO" ${CEPH_CONF:+--conf "$CEPH_CONF"} \
    --work "${BENCH_WORK:-/work/bench-ceph}" --out "$OUT/ceph" --command "bench/run.sh --backend ceph"
fi
CMD="bench/run.sh${QUICK:+ $QUICK}${ONLY:+ --only $ONLY}"
LIMIT=1800; [ -n "$QUICK" ] && LIMIT=600
rc=0
timeout --signal=INT --kill-after=60 $LIMIT python3 "$HERE/fcbench.py" $QUICK ${ONLY:+--only "$ONLY"} \
    --work "$WORK" --out "$OUT" --tzero "$TZERO" --command "$CMD" || rc=$?
if [ -f "$OUT/results.json" ]; then
  "$PLOT" "$OUT/results.json" "$OUT" || echo "plotting failed" >&2
fi
# scratch data (volumes, QEMU files) is large: keep only the golden file, logs and fio output
rm -rf "$WORK/tzero-data" "$WORK/qemu"
[ $rc -eq 3 ] && echo "!!! DATA CHECK FAILED: see $OUT/results.md" >&2
exit $rc

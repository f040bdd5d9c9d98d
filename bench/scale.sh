#!/bin/bash
# Cost as the work grows (issue 10, goal 6): 4k randwrite IOPS with 1, 64 and 512 sources, each in
# a COPY relationship that is still copying, the daemon's memory against the count, and the time of
# `lsflash` over all the relationships.
#
# For each count N: a fresh daemon; N sources and N targets of $SIZE MiB (16 MiB: 256 tracks); each
# source filled with data through NBD (so every first write copies real T0 data, not a hole);
# `mkflash --persist --rate $RATE` per pair (slow enough that every copy is still running while
# fio writes); then fio, one job per source (QD 32 for N = 1, QD 1 each beyond: 64 or 512
# requests in flight), 4k randwrite for $SECS s. Memory: VmRSS of the daemon after the
# establishes and VmHWM after fio; the "bitmap floor" is one bit per track per relationship
# (control bitmap) plus its change bitmaps when recording, i.e. N × tracks / 8 bytes here.
# lsflash: mean of 20 runs of `tzero lsflash` and `tzero --json lsflash` end to end.
#
# Usage: [TZERO=target/release/tzero] [COUNTS="1 64 512"] [SIZE=16] [SECS=10] bench/scale.sh
set -uo pipefail
bin=${TZERO:-target/release/tzero}
counts=${COUNTS:-1 64 512}
size=${SIZE:-16}
secs=${SECS:-10}
rate=${RATE:-256KiB}
work=${BENCH_WORK:-/tmp}
nbd=127.0.0.1:12929
command -v fio >/dev/null || { echo "fio is needed (apt-get install fio)"; exit 1; }

kb() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$pid/status"; }
mean_ms() { # mean wall time of 20 runs of the arguments, in ms
  local s e
  s=$(date +%s%N)
  for _ in $(seq 20); do "$@" >/dev/null || return 1; done
  e=$(date +%s%N)
  awk -v ns=$((e - s)) 'BEGIN { printf "%.1f", ns / 20 / 1e6 }'
}

echo "| sources (COPY relationships) | total IOPS | IOPS per source | RSS idle, 0 vols (MiB) | RSS after mkfbvol (MiB) | RSS after fill + establish (MiB) | peak RSS under fio (MiB) | bitmap floor (KiB) | per relationship and its 2 volumes (KiB) | lsflash (ms) | --json lsflash (ms) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for n in $counts; do
  d=$(mktemp -d "$work/scale.XXXX")
  $bin serve --data "$d" --nbd $nbd --api 127.0.0.1:12930 --max-connections 2048 >"$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$d/tzero.sock" ] && break; sleep 0.1; done
  t() { $bin --data "$d" "$@"; }
  rss0=$(kb VmRSS)
  srcs=$(for i in $(seq 1 "$n"); do printf 's%04d ' "$i"; done)
  tgts=$(for i in $(seq 1 "$n"); do printf 't%04d ' "$i"; done)
  # shellcheck disable=SC2086 # one argument per volume
  t mkfbvol --cap "${size}MiB" $srcs $tgts >/dev/null || exit 1
  rss_vols=$(kb VmRSS)
  # Fill the sources, 8 at a time.
  for v in $srcs; do echo "$v"; done | xargs -P 8 -I{} fio --name=fill --ioengine=nbd \
    --uri="nbd://$nbd/{}" --rw=write --bs=1M --size="${size}M" --iodepth=4 \
    --output=/dev/null >/dev/null 2>&1 || exit 1
  rss_filled=$(kb VmRSS)
  for i in $(seq 1 "$n"); do printf 's%04d:t%04d\n' "$i" "$i"; done |
    xargs -n 64 sh -c "$bin --data $d mkflash --persist --rate $rate \"\$@\" >/dev/null || exit 255" _ || exit 1
  rss1=$(kb VmRSS)
  # One fio job per source.
  jobs=$d/jobs.fio
  qd=1
  [ "$n" = 1 ] && qd=32
  {
    printf '[global]\nioengine=nbd\nrw=randwrite\nbs=4k\nsize=%sM\niodepth=%s\nruntime=%s\ntime_based\nrandrepeat=0\nnorandommap\nthread\ngroup_reporting\n' \
      "$size" "$qd" "$secs"
    for v in $srcs; do printf '[%s]\nuri=nbd://%s/%s\n' "$v" "$nbd" "$v"; done
  } >"$jobs"
  fio --output-format=json --output="$d/fio.json" "$jobs" >"$d/fio.err" 2>&1 ||
    { cat "$d/fio.err"; exit 1; }
  iops=$(python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"]))' "$d/fio.json")
  hwm=$(kb VmHWM)
  copying=$(t --json lsflash | python3 -c 'import json,sys; r=json.load(sys.stdin); print(sum(f["out_of_sync_tracks"] > 0 for f in r), len(r))')
  ls1=$(mean_ms t lsflash)
  ls2=$(mean_ms t --json lsflash)
  floor_kib=$(awk -v n="$n" -v s="$size" 'BEGIN { printf "%.1f", n * s * 16 / 8 / 1024 }')
  # The volumes' and the relationships' own cost: what mkfbvol and mkflash added, not what the
  # fill's I/O left in the allocator.
  per_rel=$(awk -v v="$rss_vols" -v z="$rss0" -v r="$rss1" -v f="$rss_filled" -v n="$n" \
    'BEGIN { printf "%.1f", (v - z + r - f) / n }')
  echo "| $n | $iops | $((iops / n)) | $((rss0 / 1024)) | $((rss_vols / 1024)) | $((rss1 / 1024)) | $((hwm / 1024)) | $floor_kib | $per_rel | $ls1 | $ls2 |"
  echo "  (copying while fio ran: $copying relationships)" >&2
  kill "$pid"
  wait "$pid" 2>/dev/null
  [ -n "${KEEP:-}" ] || rm -rf "$d"
done

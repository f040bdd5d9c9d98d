#!/bin/bash
# lsflash of 1,000 relationships (issue 11): a fresh daemon, 1,001 volumes of 1 MiB (16 tracks)
# made into a 12-ary tree of NOCOPY persistent relationships (v0 has 12 targets, each of them
# 12 more, ...: 1,000 relationships, 12 targets per source at most, cascades 3 deep), then
# times `tzero lsflash` and `tzero lsflash -l` end to end (process start to exit, unix socket)
# with hyperfine (apt-get install hyperfine), or a loop of `date +%s%N` without it.
# Usage: [TZERO=target/release/tzero] [N=1000] bench/lsflash.sh
set -uo pipefail  # not -e: `wait` on the killed daemon returns its signal status
bin=${TZERO:-target/release/tzero}
n=${N:-1000}
d=$(mktemp -d "${BENCH_WORK:-/tmp}/lsflash.XXXX")
$bin serve --data "$d" --nbd 127.0.0.1:12919 --api 127.0.0.1:12920 >"$d/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 50); do [ -S "$d/tzero.sock" ] && break; sleep 0.1; done
t() { $bin --data "$d" "$@"; }
vols=$(for i in $(seq 0 "$n"); do printf 'v%04d ' "$i"; done)
# shellcheck disable=SC2086 # one argument per volume
t mkfbvol --cap 1MiB $vols >/dev/null || exit 1
# Breadth first, so each source is already a target (or the root) when its own targets come:
# a volume read through by targets may not become one.
for i in $(seq 1 "$n"); do
  printf 'v%04d:v%04d\n' $(((i - 1) / 12)) "$i"
done | xargs -n 50 sh -c 'for p; do '"$bin"' --data '"$d"' mkflash --nocp --persist "$p" >/dev/null || exit 255; done' _ || exit 1
got=$(t --json lsflash | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "relationships: $got"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 50 \
    "$bin --data $d lsflash" "$bin --data $d lsflash -l" "$bin --data $d --json lsflash"
else
  for args in "lsflash" "lsflash -l" "--json lsflash"; do
    s=$(date +%s%N)
    # shellcheck disable=SC2086
    for _ in $(seq 50); do t $args >/dev/null; done
    e=$(date +%s%N)
    echo "tzero $args: $(((e - s) / 50000)) us mean of 50"
  done
fi

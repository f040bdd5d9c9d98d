#!/usr/bin/env bash
# Safeguarded Copy schedule accuracy: a policy every EVERY seconds for MINUTES minutes, with a
# host writing all along; reports each backup's distance from its due time (anchor + k × every)
# and the backups missed. Goal: every backup within ±1 s of schedule, none missed.
#
# Usage: bench/sgc_schedule.sh [EVERY seconds, default 10] [MINUTES, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
every=${1:-10}
minutes=${2:-10}
bin=$PWD/target/release/tzero
work=$(mktemp -d /var/tmp/tzero-sgcsched.XXXX)
trap 'kill $pid $writer 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
d=$work/data
mkdir -p "$d"
$bin serve --data "$d" --nbd 127.0.0.1:12950 --api 127.0.0.1:12951 >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$d/tzero.sock" ] && break; sleep 0.1; done
t() { $bin --data "$d" "$@"; }
t mkextpool --cap 8GiB p >/dev/null
t mkfbvol --cap 256MiB v >/dev/null
t mksafeguardedcap --cap 4GiB --extpool p v >/dev/null
t mksgcpolicy --every "${every}s" --keep 1000 --retain 0s sched v >/dev/null
( while true; do fio --name=w --ioengine=nbd --uri=nbd://127.0.0.1:12950/v --rw=randwrite --bs=4k \
    --size=256M --iodepth=4 --runtime=30 --time_based --rate_iops=500 --output=/dev/null >/dev/null 2>&1 || true; done ) &
writer=$!
sleep $((minutes * 60))
t --json lssgcpolicy >"$work/policy.json"
t --json lssgc >"$work/backups.json"
python3 - "$work/policy.json" "$work/backups.json" "$every" <<'PY'
import json, sys
policy = json.load(open(sys.argv[1]))[0]
backups = json.load(open(sys.argv[2]))
every = int(sys.argv[3]) * 1000
anchor = policy["anchor_ms"]
devs = [((b["taken_ms"] - anchor + every // 2) % every) - every // 2 for b in backups]
print(f"every {every // 1000} s: {len(backups)} backups, missed {policy['missed']}, failed {policy['failed']}")
print(f"distance from schedule: min {min(devs)} ms, max {max(devs)} ms, worst |{max(abs(x) for x in devs)}| ms")
PY

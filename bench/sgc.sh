#!/usr/bin/env bash
# Safeguarded Copy at scale: host 4k randwrite IOPS (fio, QD 32, over NBD) right after the 1st
# backup and right after the 500th, the backups' space against the tracks they hold, and the
# time of recoversgc --to (inside the daemon, and the CLI's wall time).
#
# Usage: bench/sgc.sh [BACKUPS, default 500] [SECONDS of fio, default 15]
# Needs: target/release/tzero, fio, qemu-io, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-500}
secs=${2:-15}
bin=$PWD/target/release/tzero
size=1024 # MiB
for tool in fio qemu-io python3; do command -v $tool >/dev/null || { echo "$tool is needed"; exit 1; }; done
work=$(mktemp -d /var/tmp/tzero-sgc.XXXX)
trap 'kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; true' EXIT
nbd=127.0.0.1:12940

start() {
  d=$work/$1
  mkdir -p "$d"
  $bin serve --data "$d" --nbd $nbd --api 127.0.0.1:12941 >"$d/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -S "$d/tzero.sock" ] && break; sleep 0.1; done
  t mkextpool --cap 64GiB p >/dev/null
  t mkfbvol --cap ${size}MiB src >/dev/null
  t mksafeguardedcap --cap 32GiB --extpool p src >/dev/null
  fio --name=fill --ioengine=nbd --uri="nbd://$nbd/src" --rw=write --bs=1M --size=${size}M \
    --iodepth=8 --output=/dev/null >/dev/null 2>&1
}
t() { $bin --data "$d" "$@"; }
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
iops() {
  fio --name=w --ioengine=nbd --uri="nbd://$nbd/src" --rw=randwrite --bs=4k --size=${size}M \
    --iodepth=32 --runtime="$secs" --time_based --randrepeat=0 --norandommap \
    --output-format=json --output="$d/fio.json" >/dev/null 2>&1
  python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"]))' "$d/fio.json"
}

start one
t mksgc src >/dev/null
one=$(iops)
stop

start many
for i in $(seq "$n"); do
  # A little change between backups: 8 random 4 KiB writes.
  cmds=()
  for _ in $(seq 8); do cmds+=(-c "write -P $((i % 250 + 1)) $(( (RANDOM * 32768 + RANDOM) % (size * 256) * 4096 )) 4k"); done
  qemu-io -f raw "nbd://$nbd/src" "${cmds[@]}" >/dev/null
  t mksgc src >/dev/null
done
many=$(iops)
t --json lssgc >"$d/lssgc.json"
read -r count stored space < <(python3 -c '
import json,sys
b=json.load(open(sys.argv[1]))
print(len(b), sum(x["stored_tracks"] for x in b), sum(x["size_bytes"] for x in b))' "$d/lssgc.json")
# Recovery of the oldest, the middle and the newest backup, 20 times each.
ids=$(python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print(b[0]["id"], b[len(b)//2]["id"], b[-1]["id"])' "$d/lssgc.json")
rec=$d/rec.txt
: >"$rec"
for id in $ids; do
  for j in $(seq 20); do
    s=$(date +%s%N)
    t --json recoversgc --backup "$id" --to "r$id-$j" >"$d/r.json"
    e=$(date +%s%N)
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["elapsed_ms"], (int(sys.argv[2]))/1e6)' "$d/r.json" $((e - s)) >>"$rec"
    # A backup has at most 12 recovered volumes reading through it at once.
    t rmflash ".sgc-$id:r$id-$j" >/dev/null 2>&1
    t rmfbvol "r$id-$j" >/dev/null
  done
done
read -r rec_daemon rec_cli < <(python3 -c '
import statistics,sys
rows=[tuple(map(float,l.split())) for l in open(sys.argv[1])]
print("%.2f %.1f" % (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)))' "$rec")
stop

echo "| backups of one 1 GiB source | 4k randwrite IOPS (QD 32) | ratio to 1 backup |"
echo "|---|---|---|"
echo "| 1 | $one | 1.00 |"
echo "| $count | $many | $(python3 -c "print('%.2f' % ($many / $one))") |"
echo
echo "space of $count backups: $space bytes for $stored stored tracks of 64 KiB: $(python3 -c "print('%.3f' % ($space / ($stored * 65536)) if $stored else 'n/a')") × the changed tracks"
echo "recoversgc --to (median of 60, backups oldest/middle/newest of $count): ${rec_daemon} ms in the daemon, ${rec_cli} ms for the CLI"

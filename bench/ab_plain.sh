#!/bin/bash
# A/B of the plain data path: alternates two tzero binaries (base, new), three rounds; each
# round starts a fresh daemon, fills a 256 MiB volume, then runs fio 4k randread and randwrite
# QD32 for 5 s. Usage: BASE=/path/to/old/tzero NEW=/path/to/new/tzero bench/ab_plain.sh
set -uo pipefail  # not -e: `wait` on the killed daemon returns its signal status
fiojob() { # uri rw out
  fio --name=j --ioengine=nbd --uri=$1 --rw=$2 --bs=4k --size=256M --iodepth=32 --runtime=5 --time_based --randrepeat=0 --norandommap --output-format=json --output=$3 >/dev/null 2>&1
  python3 -c "import json,sys; j=json.load(open('$3'))['jobs'][0]; print(int(j['read']['iops']+j['write']['iops']))"
}
for round in 1 2 3; do
for which in base new; do
  bin=${BASE:?set BASE}; [ $which = new ] && bin=${NEW:?set NEW}
  d=$(mktemp -d "${BENCH_WORK:-/work}/ab.XXXX")
  $bin serve --data $d --nbd 127.0.0.1:12909 --api 127.0.0.1:12910 >$d/log 2>&1 &
  pid=$!
  sleep 1
  $bin --data $d mkfbvol --cap 256MiB v >/dev/null
  fio --name=fill --ioengine=nbd --uri=nbd://127.0.0.1:12909/v --rw=write --bs=1M --size=256M --iodepth=8 >/dev/null 2>&1
  r=$(fiojob nbd://127.0.0.1:12909/v randread $d/r.json)
  w=$(fiojob nbd://127.0.0.1:12909/v randwrite $d/w.json)
  echo "$round $which randread=$r randwrite=$w"
  kill $pid; wait $pid 2>/dev/null; rm -rf $d
done; done

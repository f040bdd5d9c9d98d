#!/bin/bash
# Metrics scrape cost (issue 11): W5 (4k randwrite QD32 on the source of a persistent COPY
# relationship whose copy is complete) with and without a GET /metrics every second, against the
# baseline: the same workload on a volume of the same daemon with no relationship. One daemon,
# ROUNDS rounds; each round runs the three in a rotating order, so drift on a shared machine
# hits all alike. The scraper goes over TCP with the bearer token, as Prometheus would.
#
#   bench/metrics_scrape.sh                  build tzero (release) and run: ~2 min
#   TZERO_BIN=/path/to/tzero bench/metrics_scrape.sh
#   ROUNDS=5 RUNTIME=10 SIZE=1024 bench/metrics_scrape.sh
#
# Needs: fio, curl, python3. Scratch goes to $BENCH_WORK (default /work: a real disk).
# Prints one line per run, then the medians and the ratios to baseline, and the scrape's own
# time and size.
set -uo pipefail # not -e: `wait` on the stopped daemon returns its signal status
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-10}
SIZE=${SIZE:-1024} # MiB
# Free loopback ports (other daemons may be running on this machine).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
NBD=127.0.0.1:$(port)
API=127.0.0.1:$(port)
for t in fio curl python3; do
  command -v $t >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
if [ -z "${TZERO_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p tzero) || exit 1
  TZERO_BIN=$ROOT/target/release/tzero
fi
d=$(mktemp -d "${BENCH_WORK:-/work}/metrics-bench.XXXX")
trap 'kill $pid 2>/dev/null; [ -n "${spid:-}" ] && kill $spid 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT
"$TZERO_BIN" serve --data "$d/data" --nbd $NBD --api $API >"$d/log" 2>&1 &
pid=$!
for _ in $(seq 100); do [ -S "$d/data/tzero.sock" ] && break; sleep 0.1; done
[ -S "$d/data/tzero.sock" ] || { echo "the daemon did not start:" >&2; cat "$d/log" >&2; exit 1; }
tz() { "$TZERO_BIN" --data "$d/data" "$@" >/dev/null; }
fiojob() { # volume output-name
  fio --name=j --ioengine=nbd --uri=nbd://$NBD/$1 --rw=randwrite --bs=4k --size=${SIZE}M --iodepth=32 \
    --runtime=$RUNTIME --time_based --randrepeat=0 --norandommap --output-format=json \
    --output="$d/$2.json" >/dev/null 2>&1
  python3 -c "import json; print(int(json.load(open('$d/$2.json'))['jobs'][0]['write']['iops']))"
}
token=$(cat "$d/data/api-token")
scraper() { # one scrape a second until killed; logs time and size of each
  while :; do
    curl -s -o /dev/null -w '%{time_total} %{size_download} %{http_code}\n' \
      -H "Authorization: Bearer $token" "http://$API/metrics" >>"$d/scrapes.txt"
    sleep 1
  done
}

tz mkfbvol --cap ${SIZE}MiB s t b
for v in s b; do
  fio --name=fill --ioengine=nbd --uri=nbd://$NBD/$v --rw=write --bs=1M --size=${SIZE}M --iodepth=8 >/dev/null 2>&1
done
tz mkflash --persist s:t
for _ in $(seq 600); do
  "$TZERO_BIN" --data "$d/data" --json lsflash s:t | grep -q '"state": *"copied"' && break
  sleep 0.2
done
"$TZERO_BIN" --data "$d/data" --json lsflash s:t | grep -q '"state": *"copied"' ||
  { echo "the copy did not complete in 120 s" >&2; exit 1; }
echo "relationship s:t copied"

base=(); plain=(); scraped=()
for round in $(seq "$ROUNDS"); do
  case $((round % 3)) in
    1) order="base plain scraped" ;;
    2) order="plain scraped base" ;;
    0) order="scraped base plain" ;;
  esac
  for which in $order; do
    case $which in
      scraped)
        scraper & spid=$!
        v=$(fiojob s "w5-scraped-$round")
        kill $spid; wait $spid 2>/dev/null; spid=""
        scraped+=("$v") ;;
      plain) v=$(fiojob s "w5-plain-$round"); plain+=("$v") ;;
      base) v=$(fiojob b "base-$round"); base+=("$v") ;;
    esac
    echo "round $round $which: $v IOPS"
  done
done
python3 - "${base[*]}" "${plain[*]}" "${scraped[*]}" "$d/scrapes.txt" <<'EOF'
import statistics, sys
base = statistics.median(int(x) for x in sys.argv[1].split())
plain = [int(x) for x in sys.argv[2].split()]
scraped = [int(x) for x in sys.argv[3].split()]
rows = [l.split() for l in open(sys.argv[4]) if l.strip()]
ok = [r for r in rows if r[2] == "200"]
mp, ms = statistics.median(plain), statistics.median(scraped)
print(f"median baseline (no relationship): {base:.0f} IOPS")
print(f"median W5 without scrape: {mp:.0f} IOPS = {mp / base:.3f} of baseline")
print(f"median W5 with 1 s scrape: {ms:.0f} IOPS = {ms / base:.3f} of baseline "
      f"({ms / mp:.3f} of W5 without scrape)")
if ok:
    t = sorted(float(r[0]) * 1000 for r in ok)
    print(f"scrapes: {len(ok)} of {len(rows)} answered 200; time median {statistics.median(t):.2f} ms, "
          f"max {t[-1]:.2f} ms; size {ok[-1][1]} bytes")
EOF

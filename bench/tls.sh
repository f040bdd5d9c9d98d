#!/bin/bash
# NBD over TLS: tzero plain, tzero TLS, qemu-nbd plain and qemu-nbd TLS under the same fio jobs, in
# one run. fio's nbd engine (libnbd, GnuTLS) is the client for all four; the cases are 4k randread
# and randwrite at QD32, and 1M sequential read and write at QD8. Prints a markdown table with the
# ratios tzero-TLS / qemu-nbd-TLS (and plain / plain), each figure the median of ROUNDS runs (the
# four servers take turns within a round, so a burst of load from elsewhere hits all of them).
#
#   bench/tls.sh                       20 s per case, 1 GiB volumes, 1 round    (~6 min)
#   ROUNDS=3 bench/tls.sh              the median of 3 rounds                   (~18 min)
#   RUNTIME=5 SIZE=256M bench/tls.sh   a quick look
#   TZERO_BIN=/path/to/tzero bench/tls.sh   use that binary, build nothing
#
# Both servers get the same X.509 credentials (a CA and a server certificate made here with openssl;
# TLS 1.3 is negotiated by both; neither asks for a client certificate) and the same kind of backing: a sparse file, buffered I/O (tzero
# writes through the page cache; qemu-nbd runs with its default cache=writeback, aio=threads).
# Each server has two 1 GiB files (plain, TLS), filled once with 1M writes before the runs, so
# reads hit data, not holes. fio's nbd engine refuses local files in URIs (tls-certificates=),
# so libnbd finds the CA in $HOME/.pki/libnbd/ca-cert.pem, with HOME set to the scratch dir.
# Needs: fio, qemu-nbd (qemu-utils), nbdinfo (libnbd-bin), openssl, python3, cargo.
# Scratch: $BENCH_WORK (default /tmp/tzero-bench-tls; ~4 GiB once filled). Output: the table on
# stdout, and $BENCH_WORK/results.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
WORK=${BENCH_WORK:-/tmp/tzero-bench-tls}
RUNTIME=${RUNTIME:-20}
ROUNDS=${ROUNDS:-1}
SIZE=${SIZE:-1G}
for t in fio qemu-nbd nbdinfo openssl python3; do
  command -v $t >/dev/null || { echo "missing tool: $t (apt-get install -y fio qemu-utils libnbd-bin openssl)" >&2; exit 1; }
done
TZERO=${TZERO_BIN:-$ROOT/target/release/tzero}
if [ -z "${TZERO_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p tzero)
fi

rm -rf "$WORK"; mkdir -p "$WORK/pki" "$WORK/home/.pki/libnbd" "$WORK/fio"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# --- credentials: a CA, and a server certificate for 127.0.0.1 it signed
cat >"$WORK/pki/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = tzero bench
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
EOF
(
  cd "$WORK/pki"
  EC=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${EC[@]}" -keyout ca-key.pem -out ca-cert.pem -days 2 -config openssl.cnf -extensions ca
  openssl req "${EC[@]}" -keyout server-key.pem -out server.csr -config openssl.cnf
  openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
    -out server-cert.pem -days 2 -extfile openssl.cnf -extensions leaf
) >"$WORK/openssl.log" 2>&1
cp "$WORK/pki/ca-cert.pem" "$WORK/home/.pki/libnbd/ca-cert.pem"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_nbd() { # uri
  for _ in $(seq 100); do HOME=$WORK/home nbdinfo --size "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server at $1 did not come up" >&2; exit 1
}

# --- tzero: one daemon, --tls on (plain and TLS clients alike), volumes p and t
TP=$(port); TA=$(port)
"$TZERO" serve --data "$WORK/tzero-data" --nbd 127.0.0.1:$TP --api 127.0.0.1:$TA --tls on \
  --tls-cert "$WORK/pki/server-cert.pem" --tls-key "$WORK/pki/server-key.pem" >"$WORK/tzero.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$WORK/tzero-data/tzero.sock" ] && break; sleep 0.1; done
"$TZERO" --data "$WORK/tzero-data" mkfbvol --cap "${SIZE/G/GiB}" p t >/dev/null
# --- qemu-nbd: one plain, one with --tls-creds, each on its own sparse file
QP=$(port); QT=$(port)
truncate -s "$SIZE" "$WORK/qemu-plain.img" "$WORK/qemu-tls.img"
qemu-nbd -f raw -b 127.0.0.1 -p $QP -t -e 8 -x v "$WORK/qemu-plain.img" 2>>"$WORK/qemu-nbd.log" &
PIDS+=($!)
qemu-nbd --object "tls-creds-x509,id=tls0,dir=$WORK/pki,endpoint=server,verify-peer=off" --tls-creds tls0 \
  -f raw -b 127.0.0.1 -p $QT -t -e 8 -x v "$WORK/qemu-tls.img" 2>>"$WORK/qemu-nbd.log" &
PIDS+=($!)

declare -A URI=(
  [tzero-plain]="nbd://127.0.0.1:$TP/p"
  [tzero-tls]="nbds://127.0.0.1:$TP/t"
  [qemu-plain]="nbd://127.0.0.1:$QP/v"
  [qemu-tls]="nbds://127.0.0.1:$QT/v"
)
SERVERS=(tzero-plain tzero-tls qemu-plain qemu-tls)
for s in "${SERVERS[@]}"; do wait_nbd "${URI[$s]}"; done
# TLS really negotiated where asked for, and plaintext elsewhere
for s in "${SERVERS[@]}"; do
  proto=$(HOME=$WORK/home nbdinfo "${URI[$s]}" | head -1)
  case "$s:$proto" in
    *-tls:*"with TLS"*|*-plain:*"without TLS"*) ;;
    *) echo "$s: unexpected protocol line: $proto" >&2; exit 1 ;;
  esac
done

fio_run() { # server name rw bs qd [extra...]
  local s=$1 name=$2 rw=$3 bs=$4 qd=$5; shift 5
  HOME=$WORK/home fio --name="$s-$name" --ioengine=nbd --uri="${URI[$s]}" --size="$SIZE" --rw="$rw" \
    --bs="$bs" --iodepth="$qd" --numjobs=1 --randrepeat=0 --norandommap "$@" \
    --output-format=json --output="$WORK/fio/$s-$name.json" >/dev/null
}
echo "== filling the four files (1M writes)" >&2
for s in "${SERVERS[@]}"; do fio_run "$s" fill write 1M 8; done
sync

CASES=("randread 4k 32" "randwrite 4k 32" "read 1M 8" "write 1M 8")
for c in "${CASES[@]}"; do
  read -r rw bs qd <<<"$c"
  for round in $(seq "$ROUNDS"); do
    for s in "${SERVERS[@]}"; do
      echo "== round $round: $s $rw bs=$bs QD$qd ${RUNTIME}s" >&2
      fio_run "$s" "$rw-$bs-$round" "$rw" "$bs" "$qd" --time_based --runtime="$RUNTIME" --ramp_time=2
      sync
    done
  done
done

COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
python3 - "$WORK" "$RUNTIME" "$SIZE" "$COMMIT" "$ROUNDS" <<'EOF' | tee "$WORK/results.md"
import json, statistics, sys, datetime
work, runtime, size, commit, rounds = sys.argv[1:6]
rounds = int(rounds)
servers = ["tzero-plain", "tzero-tls", "qemu-plain", "qemu-tls"]
cases = [("randread", "4k", 32), ("randwrite", "4k", 32), ("read", "1M", 8), ("write", "1M", 8)]
def one(s, rw, bs, r):
    j = json.load(open(f"{work}/fio/{s}-{rw}-{bs}-{r}.json"))["jobs"][0]
    d = j["write" if "write" in rw else "read"]
    return d["iops"] if bs == "4k" else d["bw_bytes"] / 2**20
def figure(s, rw, bs):
    return statistics.median(one(s, rw, bs, r) for r in range(1, rounds + 1))
print(f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, "
      f"`ROUNDS={rounds} bench/tls.sh` ({runtime} s per case after 2 s ramp, {size} volumes, fio --ioengine=nbd; "
      f"{'the median of ' + str(rounds) + ' rounds' if rounds > 1 else 'one round'})\n")
print("| case | tzero plain | tzero TLS | qemu-nbd plain | qemu-nbd TLS | tzero TLS / qemu-nbd TLS | tzero plain / qemu-nbd plain |")
print("|---|---|---|---|---|---|---|")
for rw, bs, qd in cases:
    v = {s: figure(s, rw, bs) for s in servers}
    unit = "IOPS" if bs == "4k" else "MiB/s"
    name = f"{bs} {'sequential ' if bs == '1M' else ''}{rw.replace('rand', 'random ')} QD{qd} ({unit})"
    cells = " | ".join(f"{v[s]:.0f}" for s in servers)
    print(f"| {name} | {cells} | **{v['tzero-tls'] / v['qemu-tls']:.2f}** | {v['tzero-plain'] / v['qemu-plain']:.2f} |")
EOF

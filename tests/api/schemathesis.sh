#!/usr/bin/env bash
# Property-based tests of the HTTP API with schemathesis, against the real daemon, over TCP with
# the bearer token and over the unix socket (reached through a socat bridge, so the daemon sees a
# unix-socket client that sends no token; the socket's document says no token is needed).
#
# Every check schemathesis has is on but one: no server error, no response that breaks the
# generated document (status, content type, headers, body schema), no schema-violating request
# accepted, auth enforced on TCP, no unsupported method, resources gone after DELETE. Left out is
# `positive_data_acceptance` (every schema-valid request must succeed): FlashCopy has rules that
# JSON Schema cannot state (source and target differ, the target is no other relationship's target,
# sizes match, ...), and the API rightly refuses those with a 4xx and a stable code.
#
# Usage: tests/api/schemathesis.sh [SECONDS per transport, default 60]
# Needs: target/release/tzero (cargo build --release), schemathesis (pip), socat, curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
budget="${1:-60}"
bin="$PWD/target/release/tzero"
out="$PWD/target/schemathesis"
mkdir -p "$out"
for tool in schemathesis socat curl; do
  command -v "$tool" >/dev/null || { echo "schemathesis.sh: $tool is missing" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "schemathesis.sh: build $bin first (cargo build --release)" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
mounted=""
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$mounted" ] || umount "$mounted" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Generated bodies ask for standard (fully allocated) volumes of any size: keep the data directory
# on a small tmpfs so that they fill it, not the machine's disk (the full-disk answers are then
# tested too). Mounting needs root; elsewhere a plain directory is used.
mkdir -p "$work/data"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=512m tzero-schemathesis "$work/data"; then
  mounted="$work/data"
elif [ "${CI:-}" = true ]; then
  echo "schemathesis.sh: cannot mount a tmpfs for the data directory (CI runs as root)" >&2
  exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nbd_port="$(free_port)"; api_port="$(free_port)"; bridge_port="$(free_port)"
"$bin" serve --data "$work/data" --nbd "127.0.0.1:$nbd_port" --api "127.0.0.1:$api_port" \
  >"$out/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$work/data/tzero.sock" ] && [ -s "$work/data/api-token" ] && break
  sleep 0.1
done
token="$(cat "$work/data/api-token")"
socat -lf "$out/socat.log" "TCP-LISTEN:$bridge_port,bind=127.0.0.1,reuseaddr,fork" \
  "UNIX-CONNECT:$work/data/tzero.sock" &
pids+=($!)
for _ in $(seq 50); do
  curl -sf "http://127.0.0.1:$bridge_port/v1/openapi.json" >/dev/null && break
  sleep 0.1
done

# Some state for the listings to show: volumes and a recording relationship.
cli() { "$bin" --data "$work/data" "$@" >/dev/null; }
cli mkfbvol --cap 4MiB src tgt spare
cli mkflash --nocp --persist --record src:tgt

failed=0
run() {
  local name="$1" url="$2"; shift 2
  echo "== schemathesis over $name (${budget}s)"
  if schemathesis --config-file tests/api/schemathesis.toml run "$url/v1/openapi.json" "$@" --checks all --exclude-checks positive_data_acceptance --max-time "$budget" \
      --workers 2 --request-timeout 30 --seed 1 --no-color >"$out/$name.txt" 2>&1; then
    echo "   $name: no failures ($(grep -Eo '[0-9]+ generated' "$out/$name.txt" | head -1) test cases)"
  else
    failed=$((failed + 1))
    echo "   $name: FAILED, see $out/$name.txt" >&2
    sed -n '/FAILURES/,/SUMMARY/p' "$out/$name.txt" | head -120 >&2
  fi
}
# Over TCP the token routes are left out: rotating the admin token mid-run would lock the rest of
# the run out. The unix-socket run, which needs no token and comes last, covers them.
run tcp "http://127.0.0.1:$api_port" -H "Authorization: Bearer $token" --exclude-path-regex '^/v1/tokens/'
run unix-socket "http://127.0.0.1:$bridge_port"
if ! kill -0 "${pids[0]}" 2>/dev/null; then
  echo "schemathesis.sh: the daemon died; see $out/daemon.log" >&2
  failed=$((failed + 1))
fi
echo "schemathesis: $((2 - failed)) passed, $failed failed"
[ "$failed" = 0 ]

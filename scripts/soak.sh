#!/usr/bin/env bash
# The kill soak: scripts/soak.sh --kills N [--seed S] [--self-test]
#
# What it proves, through the real daemon binary and real NBD clients (qemu-io, nbdcopy), over
# N crashes (`kill -9` of the daemon at a random moment, then a restart on the same data
# directory):
#   1. a FlashCopy target reads exactly its source's data at T0, except the sectors written to
#      the target since: for COPY relationships whose slow background copy is cut by the kill,
#      NOCOPY ones, and cascades (a→b→c, where b is both);
#   2. a write acknowledged with FUA, or before an acknowledged FLUSH, is never lost;
#   3. a write not flushed may be lost or kept, but nothing else changes: every other sector of
#      every volume reads what it held before.
# Topology keeps changing between kills (mkflash COPY/NOCOPY/--record/two-pair groups, rmflash,
# rmflash --cp, resyncflash, chflash --cp, setflashrate), with no writer running, so every T0
# is an exact image. One mkflash/rmflash in three is itself cut by a kill -9 a few ms in (after
# the restart the daemon's listing says whether it happened: a group all or nothing), and one
# restart in ten is killed again while the daemon opens its catalog. The reference model (scripts/soak_model.py) keeps each volume's expected
# contents on disk, and every sector a writer writes is stamped with (volume, write number,
# offset) so a misplaced or stale sector is caught, not only a wrong pattern.
#
# Exit status 1 on any corruption, lost flushed write, failed relationship or a volume the
# daemon left undefined against the model, printing volume, offset, expected and got. The last
# line is the summary: kills, corruptions, lost flushed writes, elapsed seconds.
#
# --self-test: a short soak, then a byte of a target's file is flipped on disk while the
# daemon is down; the checker must report exactly that volume and offset (exit 0 if it does).
#
# Env: TZERO_BIN (default target/release/tzero, built if missing), KEEP=1 keeps the work
# directory (it is kept anyway when the check fails: it is the evidence), SOAK_VERBOSE=1 says
# what each cycle does, SEED (or --seed) replays the same choices (the kill moments' effects
# depend on timing, so a replay is close, not identical).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KILLS=50
SELF_TEST=0
SEED=${SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
usage() { echo "usage: $0 [--kills N] [--seed S] [--self-test]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --kills) [ $# -ge 2 ] || usage; KILLS=$2; shift 2 ;;
    --seed) [ $# -ge 2 ] || usage; SEED=$2; shift 2 ;;
    --self-test) SELF_TEST=1; shift ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
done
[[ $KILLS =~ ^[0-9]+$ ]] || usage
if [ "$SELF_TEST" = 1 ]; then KILLS=3; fi

for tool in qemu-io nbdcopy python3 stdbuf timeout; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is missing (scripts/test.sh installs it)" >&2; exit 1; }
done
if [ -n "${TZERO_BIN:-}" ]; then
  TZERO=$TZERO_BIN
else
  TZERO=$ROOT/target/release/tzero
  [ -x "$TZERO" ] || cargo build --release -q
fi
# The interpreter itself, not a version manager's shim: it starts several times per kill.
PY=$(python3 -c 'import sys; print(sys.executable)')
MODEL=("$PY" "$ROOT/scripts/soak_model.py")

CAP=$((8 << 20))            # 8 MiB: 128 tracks of 64 KiB, whole images compared every cycle
VOLS=(a b c d e f g h)
CHUNKS=10                   # qemu-io runs planned per writer per cycle (soak_model.py plan)
W=$(mktemp -d "${TMPDIR:-/tmp}/tzero-soak.XXXXXX")
export SOAK_DIR=$W
DATA=$W/data
LOG=$W/daemon.log
DPID=""
WRITERS=()
FAILED=0
START=$(date +%s)
kills=0

cleanup() {
  # Never leave a daemon or a writer behind, whatever ended the script.
  local p
  for p in "${WRITERS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  if [ -n "$DPID" ]; then kill -9 "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ] || [ "$FAILED" = 1 ]; then
    echo "soak: work directory kept: $W (daemon log: $LOG)" >&2
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { [ "${SOAK_VERBOSE:-0}" = 1 ] && echo "soak[$kills]: $*" >&2; return 0; }

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NBD_PORT=$(free_port)
API_PORT=$(free_port)

tz() { "$TZERO" --data "$DATA" "$@"; }

spawn_daemon() {
  echo "=== start (kills so far: $kills) $(date -u +%T.%N)" >>"$LOG"
  "$TZERO" serve --data "$DATA" --nbd "127.0.0.1:$NBD_PORT" --api "127.0.0.1:$API_PORT" \
    </dev/null >>"$LOG" 2>&1 &
  DPID=$!
}

start_daemon() {
  # Loopback only. The ports stay the same across restarts (the daemon binds with
  # SO_REUSEADDR); if another process took one meanwhile, take new ones.
  local attempt
  for attempt in 1 2 3; do
    spawn_daemon
    for _ in $(seq 600); do
      if ! kill -0 "$DPID" 2>/dev/null; then break; fi
      # The unix socket answers once the NBD and TCP listeners are bound (serve.rs binds
      # them first).
      if tz lsfbvol >/dev/null 2>&1; then return 0; fi
      sleep 0.05
    done
    kill -9 "$DPID" 2>/dev/null || true
    wait "$DPID" 2>/dev/null || true
    DPID=""
    echo "soak: daemon did not start (attempt $attempt); log tail:" >&2
    tail -n 5 "$LOG" >&2
    NBD_PORT=$(free_port)
    API_PORT=$(free_port)
  done
  FAILED=1
  echo "soak: the daemon does not start" >&2
  exit 1
}

kill_daemon() {
  if ! kill -0 "$DPID" 2>/dev/null; then
    FAILED=1
    echo "soak: the daemon died by itself (see $LOG)" >&2
    exit 1
  fi
  kill -9 "$DPID"
  wait "$DPID" 2>/dev/null || true
  DPID=""
  kills=$((kills + 1))
  echo "=== kill -9 #$kills $(date -u +%T.%N)" >>"$LOG"
}

uri() { echo "nbd://127.0.0.1:$NBD_PORT/$1"; }

# A synchronous qemu-io run that must fully succeed (set-up and refills, daemon up, no kill).
qemu_ok() {
  local vol=$1 out
  shift
  local args=()
  local c
  for c in "$@"; do args+=(-c "$c"); done
  if ! out=$(qemu-io -f raw "$(uri "$vol")" "${args[@]}" 2>&1) || grep -q "failed" <<<"$out"; then
    FAILED=1
    echo "soak: qemu-io on $vol failed with the daemon up: $out" >&2
    exit 1
  fi
}

# Volume V becomes a fresh stamped image (the model learns it only once the write and its
# flush are acknowledged).
fill() {
  local v=$1 f
  f=$("${MODEL[@]}" fill "$v")
  qemu_ok "$v" "write -s $f 0 $CAP" "flush"
  "${MODEL[@]}" fillcommit "$v"
}

# One writer: the planned qemu-io runs of volume V, one after another, until one does not end
# with its final marker read (the daemon died under it). stdbuf keeps qemu-io's answers and
# its error lines in order in one file, which is how soak_model.py tells what was answered.
writer() {
  local v=$1 k cmds out c
  for k in $(seq 0 $((CHUNKS - 1))); do
    cmds=$W/plan/$v.$k.cmds
    out=$W/plan/$v.$k.out
    local args=()
    while IFS= read -r c; do args+=(-c "$c"); done <"$cmds"
    timeout -s KILL 60 stdbuf -oL -eL qemu-io -f raw "$(uri "$v")" "${args[@]}" >"$out" 2>&1 || return 0
    if grep -q "failed" "$out"; then return 0; fi
  done
}

# rmflash now; an incomplete copy leaves the target undefined (the daemon says so): give it new
# known contents, so it is written and checked again (and may become a target or a source).
withdraw() {
  local pair=$1 out undefined
  out=$(tz --json rmflash "$pair" 2>/dev/null) || { FAILED=1; echo "soak: tzero rmflash $pair failed" >&2; exit 1; }
  undefined=$("$PY" -c 'import json,sys; print("true" if json.loads(sys.argv[1])[0]["contents_undefined"] else "false")' "$out")
  "${MODEL[@]}" withdrawn "$pair" "$undefined"
  if [ "$undefined" = true ]; then fill "${pair#*:}"; fi
}

# rmflash --cp, chflash --cp, setflashrate: they change no data the model knows of (a target
# withdrawn when copied stays defined), so a refusal is only counted.
other() {
  local out
  if ! out=$(tz "$@" 2>&1); then
    say "refused: $out"
    "${MODEL[@]}" count refused
  fi
}

# mkflash or rmflash cut by a kill -9 a few milliseconds in (the CLI may not even have
# connected). After the restart the daemon's own listing says whether it happened, and the
# model follows: a group's pairs all exist (T0 = the sources' models, exact since no writer
# ran) or none does (the targets are unchanged); a withdrawn pair's target is defined or
# marked undefined (then refilled), a pair still there left its target as it was.
admin_killed() {
  local ms=$((RANDOM % 40)) cli v
  say "tzero $* cut by a kill after $ms ms"
  tz "$@" >"$W/admin.out" 2>&1 &
  cli=$!
  sleep "0.$(printf '%03d' "$ms")"
  kill_daemon
  wait "$cli" || true
  start_daemon
  tz --json lsflash >"$W/flash.json"
  tz --json lsfbvol >"$W/lsfbvol.json"
  if ! "${MODEL[@]}" settle "$W/flash.json" "$W/lsfbvol.json" "$@" >"$W/settle.out"; then
    FAILED=1
    echo "soak: after tzero $* was cut by a kill: $(cat "$W/settle.out")" >&2
    exit 1
  fi
  while IFS= read -r v; do fill "$v"; done <"$W/settle.out"
}

topology() {
  local line pair pairs rc out
  tz --json lsflash >"$W/flash.json"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    say "tzero $line"
    read -ra words <<<"$line"
    case ${words[0]} in
      mkflash)
        pairs=()
        for pair in "${words[@]:1}"; do [[ $pair == *:* ]] && pairs+=("$pair"); done
        if [ $((RANDOM % 3)) = 0 ] && [ "$kills" -lt $((KILLS - 1)) ]; then
          admin_killed "${words[@]}"
        elif out=$(tz "${words[@]}" 2>&1); then
          "${MODEL[@]}" t0 "${pairs[@]}"
        else
          rc=$?
          # A refusal (exit 1) must have changed nothing: none of the pairs may exist.
          tz --json lsflash >"$W/flash.json"
          for pair in "${pairs[@]}"; do
            if "$PY" -c 'import json,sys; s,t=sys.argv[2].split(":"); sys.exit(0 if any(r["source"]==s and r["target"]==t for r in json.load(open(sys.argv[1]))) else 1)' "$W/flash.json" "$pair"; then
              FAILED=1
              echo "soak: tzero $line failed ($rc: $out) but $pair exists" >&2
              exit 1
            fi
          done
          say "refused: $out"
          "${MODEL[@]}" count refused
        fi
        ;;
      rmflash)
        if [ "${words[1]}" = "--cp" ]; then
          other "${words[@]}"
        elif [ $((RANDOM % 3)) = 0 ] && [ "$kills" -lt $((KILLS - 1)) ]; then
          admin_killed "${words[@]}"
        else
          withdraw "${words[-1]}"
        fi
        ;;
      resyncflash)
        # A new T0 for the target: the source's model as of now (a refusal changes nothing).
        if out=$(tz "${words[@]}" 2>&1); then
          "${MODEL[@]}" t0 "${words[-1]}"
          "${MODEL[@]}" count resynced
        else
          say "refused: $out"
          "${MODEL[@]}" count refused
        fi
        ;;
      *)
        other "${words[@]}"
        ;;
    esac
  done < <("${MODEL[@]}" topo "$SEED" "$1" "$W/flash.json")
}

# Reads every volume back through the restarted daemon and compares it with the model.
check() {
  local v rc=0
  mkdir -p "$W/read"
  tz --json lsfbvol >"$W/lsfbvol.json"
  tz --json lsflash >"$W/lsflash.json"
  local pids=()
  for v in "${VOLS[@]}"; do
    rm -f "$W/read/$v.img"
    nbdcopy "$(uri "$v")" "$W/read/$v.img" &
    pids+=($!)
  done
  for v in "${pids[@]}"; do
    wait "$v" || { echo "soak: nbdcopy could not read a volume back" >&2; return 1; }
  done
  "${MODEL[@]}" check "$W/read" "$W/lsfbvol.json" "$W/lsflash.json" || rc=$?
  return $rc
}

summary() {
  echo "soak: seed=$SEED $("${MODEL[@]}" summary)"
  local s
  s=$("$PY" -c 'import json,sys; t=json.load(open(sys.argv[1])).get("total_problems",{}); print(t.get("corruption",0), t.get("lost",0))' "$W/state.json")
  echo "soak: kills=$kills corruptions=${s% *} lost_flushed_writes=${s#* } elapsed=$(($(date +%s) - START))s"
}

# --- set-up: eight stamped volumes, written and flushed, then checked once before any kill.
mkdir -p "$DATA"
echo "soak: seed=$SEED kills=$KILLS work=$W" >&2
start_daemon
tz mkfbvol --cap "$CAP" "${VOLS[@]}" >/dev/null
"${MODEL[@]}" init "$CAP" "${VOLS[@]}"
for v in "${VOLS[@]}"; do qemu_ok "$v" "write -s $W/model/$v.img 0 $CAP" "flush"; done
if ! check; then FAILED=1; summary; exit 1; fi

RANDOM=$((SEED % 32768))
cycle=0
while [ "$kills" -lt "$KILLS" ]; do
  topology "$cycle"
  read -ra wvols <<<"$("${MODEL[@]}" plan "$SEED" "$cycle" "$CHUNKS")"
  WRITERS=()
  for v in "${wvols[@]}"; do writer "$v" & WRITERS+=($!); done
  # The kill lands anywhere: in the connects, mid-write, mid-flush, after the writers are done
  # (background copy and destage only).
  ms=$((RANDOM % 1000 + 10))
  sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
  kill_daemon
  for p in "${WRITERS[@]}"; do wait "$p" || true; done
  WRITERS=()
  say "killed after ${ms} ms; writers: ${wvols[*]}"
  if [ $((RANDOM % 10)) = 0 ] && [ "$kills" -lt "$KILLS" ]; then
    # Killed again while it opens the catalog and recovers (it may not have started yet).
    ms=$((RANDOM % 60))
    spawn_daemon
    sleep "0.$(printf '%03d' "$ms")"
    kill_daemon
    say "killed again $ms ms into its start"
    "${MODEL[@]}" count kills_in_recovery
  fi
  start_daemon
  if ! check; then
    FAILED=1
    echo "soak: check failed after kill $kills (cycle $cycle, seed $SEED)" >&2
    summary
    exit 1
  fi
  cycle=$((cycle + 1))
  if [ $((kills % 50)) = 0 ]; then
    echo "soak: $kills kills, $(($(date +%s) - START)) s" >&2
  fi
done

if [ "$SELF_TEST" = 1 ]; then
  # A target whose copy is complete reads its own file: flip one byte of that file with the
  # daemon down and the checker must name the volume and the offset.
  tz --json lsflash >"$W/flash.json"
  for pair in $("$PY" -c 'import json,sys; print(" ".join(r["source"]+":"+r["target"] for r in json.load(open(sys.argv[1])) if "h" in (r["source"], r["target"])))' "$W/flash.json"); do
    withdraw "$pair"
  done
  tz mkflash --persist --wait a:h >/dev/null
  "${MODEL[@]}" t0 a:h
  # One write to h after its T0 so that no other file holds h's exact bytes.
  "${MODEL[@]}" fill h >/dev/null
  "$PY" -c 'import sys; open(sys.argv[1],"r+b").write(open(sys.argv[2],"rb").read(65536))' "$W/model/h.img" "$W/fill/h.bin"
  qemu_ok h "write -s $W/model/h.img 0 65536" "flush"
  kill_daemon
  file=$("${MODEL[@]}" find-file h "$DATA")
  off=$("${MODEL[@]}" corrupt "$file" "$SEED")
  echo "soak: self-test: flipped the byte at offset $off of h's file $(basename "$file")" >&2
  start_daemon
  if out=$(check); then
    FAILED=1
    echo "soak: self-test FAILED: the checker did not see the corrupted byte" >&2
    exit 1
  fi
  echo "$out"
  if grep -q "CORRUPTION: volume h offset $off " <<<"$out"; then
    echo "soak: self-test passed: the checker reported volume h, offset $off"
    exit 0
  fi
  FAILED=1
  echo "soak: self-test FAILED: the checker failed, but not at volume h offset $off" >&2
  exit 1
fi

summary

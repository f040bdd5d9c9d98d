#!/usr/bin/env bash
# A real Ceph cluster on loopback, for tzero's tests and benchmarks: 3 monitors and 3 BlueStore
# OSDs on sparse files, one replicated RBD pool (size 3, min_size 2), no systemd, no auth.
# Every daemon runs as root from Debian's packages (ceph-mon, ceph-osd, ceph-common) and is
# stopped by the PID it wrote under DIR, so the script never touches a process it did not start.
#
#   scripts/ceph-cluster.sh start DIR        new cluster in DIR (empty or absent); prints DIR/ceph.conf
#   scripts/ceph-cluster.sh stop DIR [--purge]   SIGTERM, then SIGKILL, every daemon of DIR
#   scripts/ceph-cluster.sh kill-osd DIR N   kill -9 osd.N (crash tests)
#   scripts/ceph-cluster.sh start-osd DIR N  start osd.N again on its data
#   scripts/ceph-cluster.sh status DIR       ceph -s
#
# Settings: CEPH_PORT_BASE (default 16789: monitors on BASE, BASE+1, BASE+2), CEPH_POOL
# (default tzero), CEPH_OSD_SIZE (default 10G, sparse), CEPH_PG (default 16).
# Why no manager: Pacific's RADOS and RBD work without one, and it would cost a core's worth of
# Python; without it `ceph -s` shows no PG states, so readiness is checked with a real write.
set -euo pipefail

usage() { sed -n '2,16p' "$0" >&2; exit 64; }
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2

base=${CEPH_PORT_BASE:-16789}
pool=${CEPH_POOL:-tzero}
osd_size=${CEPH_OSD_SIZE:-10G}
pgs=${CEPH_PG:-16}
mons=(a b c)
osds=(0 1 2)

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "ceph-cluster.sh: $tool is missing (apt-get install -y ceph-mon ceph-osd ceph-common)" >&2
      exit 1
    }
  done
}

ceph_cli() { timeout 60 ceph -c "$dir/ceph.conf" "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
  local hosts="" i=0
  for m in "${mons[@]}"; do
    hosts+="${hosts:+,}v2:127.0.0.1:$((base + i))"
    i=$((i + 1))
  done
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = $hosts
public_network = 127.0.0.0/8
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
osd_pool_default_size = 3
osd_pool_default_min_size = 2
osd_pool_default_pg_num = $pgs
osd_crush_chooseleaf_type = 0
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
mon_data_avail_warn = 1
mon_data_avail_crit = 0
# Small daemons: the cluster shares 2 cores and the memory with tzero and the tests.
osd_memory_target = 939524096
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
ms_async_op_threads = 2
# An OSD killed by a test is marked down at once by its peers' reports, not after 20 s.
osd_heartbeat_grace = 6
osd_heartbeat_interval = 2
mon_osd_min_down_reporters = 1
log_file = $dir/log/\$name.log
pid_file = $dir/run/\$name.pid
run_dir = $dir/run
# Clients get one socket per process (\$pid), so several tzero nodes and the CLI can coexist.
admin_socket = $dir/run/\$name.\$pid.asok
[mon]
mon_data = $dir/mon/\$name
admin_socket = $dir/run/\$name.asok
[osd]
osd_data = $dir/osd/\$name
osd_objectstore = bluestore
admin_socket = $dir/run/\$name.asok
EOF
  for n in "${osds[@]}"; do
    # BlueStore's block file outside the OSD's data directory: inside it, mkfs fails (ELOOP).
    printf '[osd.%s]\nbluestore_block_path = %s/blk/osd%s.img\n' "$n" "$dir" "$n" >>"$dir/ceph.conf"
  done
}

start_osd() {
  local n=$1
  ceph-osd -c "$dir/ceph.conf" -i "$n" --setuser root --setgroup root >>"$dir/log/start-osd.$n.log" 2>&1
}

start() {
  need ceph ceph-mon ceph-osd monmaptool uuidgen rbd
  if [ -e "$dir" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
    echo "ceph-cluster.sh: $dir is not empty" >&2
    exit 1
  fi
  local t0=$SECONDS
  mkdir -p "$dir"/{run,log,mon,osd,blk}
  dir=$(cd "$dir" && pwd)
  fsid=$(uuidgen)
  write_conf
  local monmap_args=() i=0
  for m in "${mons[@]}"; do
    monmap_args+=(--addv "$m" "[v2:127.0.0.1:$((base + i))]")
    i=$((i + 1))
  done
  monmaptool --create --fsid "$fsid" "${monmap_args[@]}" "$dir/monmap" >/dev/null
  for m in "${mons[@]}"; do
    ceph-mon -c "$dir/ceph.conf" --mkfs -i "$m" --monmap "$dir/monmap" --setuser root --setgroup root
    ceph-mon -c "$dir/ceph.conf" -i "$m" --setuser root --setgroup root
  done
  ceph_cli quorum_status >/dev/null
  for n in "${osds[@]}"; do
    local uuid id
    uuid=$(uuidgen)
    truncate -s "$osd_size" "$dir/blk/osd$n.img"
    id=$(ceph_cli osd new "$uuid")
    [ "$id" = "$n" ] || { echo "ceph-cluster.sh: got osd.$id, wanted osd.$n" >&2; exit 1; }
    mkdir -p "$dir/osd/osd.$n"
    ceph-osd -c "$dir/ceph.conf" -i "$n" --mkfs --osd-uuid "$uuid" --setuser root --setgroup root \
      >>"$dir/log/mkfs-osd.$n.log" 2>&1
    start_osd "$n"
  done
  ceph_cli osd pool create "$pool" "$pgs" "$pgs" replicated >/dev/null 2>&1
  ceph_cli osd pool set "$pool" size 3 >/dev/null 2>&1
  ceph_cli osd pool set "$pool" min_size 2 >/dev/null 2>&1
  ceph_cli osd pool application enable "$pool" rbd >/dev/null 2>&1
  # Ready when every OSD is up and an image can be created, written and read back.
  local deadline=$((SECONDS + 120))
  until [ "$(ceph_cli osd stat --format json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["num_up_osds"])' 2>/dev/null)" = 3 ]; do
    [ $SECONDS -lt $deadline ] || { ceph_cli -s >&2; echo "ceph-cluster.sh: OSDs not up after 120 s" >&2; exit 1; }
    sleep 1
  done
  timeout 120 rbd -c "$dir/ceph.conf" pool init "$pool"
  until timeout 30 rbd -c "$dir/ceph.conf" create "$pool/ready-check" --size 4M \
      --image-feature layering,exclusive-lock,object-map,fast-diff >/dev/null 2>&1 &&
    timeout 30 rbd -c "$dir/ceph.conf" bench --io-type write --io-total 4M "$pool/ready-check" >/dev/null 2>&1 &&
    timeout 30 rbd -c "$dir/ceph.conf" rm "$pool/ready-check" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { ceph_cli -s >&2; echo "ceph-cluster.sh: pool $pool not writable after 120 s" >&2; exit 1; }
    sleep 2
  done
  echo "ceph cluster up: $dir/ceph.conf (3 mons, 3 osds, pool $pool) in $((SECONDS - t0)) s"
}

stop_pidfile() {
  local f=$1
  pid_alive "$f" || return 0
  local pid
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop() {
  [ -d "$dir/run" ] || { [ "${1:-}" = --purge ] && rm -rf "$dir"; return 0; }
  for n in "${osds[@]}"; do stop_pidfile "$dir/run/osd.$n.pid"; done
  for m in "${mons[@]}"; do stop_pidfile "$dir/run/mon.$m.pid"; done
  if [ "${1:-}" = --purge ]; then rm -rf "$dir"; fi
}

case "$cmd" in
  start) start ;;
  stop) stop "$@" ;;
  kill-osd)
    [ $# -eq 1 ] || usage
    f="$dir/run/osd.$1.pid"
    pid_alive "$f" || { echo "ceph-cluster.sh: osd.$1 is not running" >&2; exit 1; }
    kill -KILL "$(cat "$f")"
    ;;
  start-osd)
    [ $# -eq 1 ] || usage
    pid_alive "$dir/run/osd.$1.pid" || start_osd "$1"
    ;;
  status) ceph_cli -s ;;
  *) usage ;;
esac

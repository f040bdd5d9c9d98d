#!/usr/bin/env bash
# The README's test command: installs the real NBD clients the integration tests drive
# (qemu-io/qemu-img, nbdinfo/nbdcopy, nbdkit, fio), openssl (the TLS tests' certificates),
# libssl-dev and pkg-config (the openssl crate), promtool (package prometheus: it checks /metrics)
# and the tools of the full-disk tests (mkfs.ext4,
# losetup; those tests mount a tmpfs and a loop ext4, so they need root) and of the FUSE fault
# tests (fusermount3, package fuse3; they mount tzero-faultfs under the daemon) when they are missing,
# then runs every test: cargo's, schemathesis against the API, the web console's browser
# test (tests/console, headless Chromium) and a 50-kill soak of the daemon (scripts/soak.sh).
# The Ceph backend's tests (crates/tzero/tests/ceph.rs, the engine model over RBD) run against a
# real cluster that this script starts (scripts/ceph-cluster.sh: 3 monitors, 3 BlueStore OSDs on
# sparse files) and stops at exit; it installs ceph-mon, ceph-osd, ceph-common and librbd1 too.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in ceph-mon:ceph-mon ceph-osd:ceph-osd ceph-common:rbd uuid-runtime:uuidgen qemu-utils:qemu-io qemu-utils:qemu-img libnbd-bin:nbdinfo libnbd-bin:nbdcopy nbdkit:nbdkit fio:fio e2fsprogs:mkfs.ext4 util-linux:losetup socat:socat curl:curl prometheus:promtool openssl:openssl fuse3:fusermount3; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
# The openssl crate (NBD TLS with pre-shared keys) builds against libssl through pkg-config.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# schemathesis (PyPI) tests the HTTP API against the document it serves.
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "installing: schemathesis (pip)"
  python3 -m pip install -q "schemathesis==4.32.5"
fi

# A Ceph cluster for the Ceph backend's tests, unless the caller gave one (TZERO_CEPH_CONF).
if [ -z "${TZERO_CEPH_CONF:-}" ]; then
  ceph_dir=$(mktemp -d /tmp/tzero-ceph.XXXXXX)
  trap 'scripts/ceph-cluster.sh stop "$ceph_dir" --purge' EXIT
  scripts/ceph-cluster.sh start "$ceph_dir"
  export TZERO_CEPH_CONF="$ceph_dir/ceph.conf" TZERO_CEPH_DIR="$ceph_dir"
fi

cargo test --workspace --release "$@"
# The API, property-tested over TCP and over the unix socket (60 s each) against the daemon
# binary the tests above built, and the web console in headless Chromium (tests/console). Only
# for the whole run: arguments select cargo tests.
if [ $# -eq 0 ]; then
  tests/api/schemathesis.sh 60

  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing: chromium chromium-driver"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
  }
  python3 -c 'import selenium' 2>/dev/null || python3 -m pip install -q selenium
  cargo build --release -q
  python3 tests/console/test_console.py
  # 50 kill -9s of the daemon under qemu-io writers on COPY, NOCOPY and cascaded pairs, every
  # volume checked against the reference model after each restart (RELIABILITY.md).
  scripts/soak.sh --kills 50
fi

#!/usr/bin/env bash
# The README's test command: installs the real NBD clients the integration tests drive
# (qemu-io/qemu-img, nbdinfo/nbdcopy, nbdkit, fio), promtool (package prometheus: it checks /metrics)
# and the tools of the full-disk tests (mkfs.ext4,
# losetup; those tests mount a tmpfs and a loop ext4, so they need root) when they are missing,
# then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in qemu-utils:qemu-io qemu-utils:qemu-img libnbd-bin:nbdinfo libnbd-bin:nbdcopy nbdkit:nbdkit fio:fio e2fsprogs:mkfs.ext4 util-linux:losetup prometheus:promtool; do
  command -v "${pair#*:}" >/dev/null 2>&1 || missing+=("${pair%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace --release "$@"

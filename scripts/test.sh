#!/usr/bin/env bash
# The README's test command: installs the real NBD clients the integration tests drive
# (qemu-io/qemu-img, nbdinfo/nbdcopy, nbdkit, fio) and the tools of the full-disk tests (mkfs.ext4,
# losetup; those tests mount a tmpfs and a loop ext4, so they need root) when they are missing,
# then runs every test, and the web console's browser test (tests/console, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in qemu-utils:qemu-io qemu-utils:qemu-img libnbd-bin:nbdinfo libnbd-bin:nbdcopy nbdkit:nbdkit fio:fio e2fsprogs:mkfs.ext4 util-linux:losetup; do
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

# The web console in headless Chromium (tests/console): the browser, its driver and selenium.
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || {
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: chromium chromium-driver"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
}
python3 -c 'import selenium' 2>/dev/null || python3 -m pip install -q selenium
cargo build --release -q
python3 tests/console/test_console.py

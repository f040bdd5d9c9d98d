#!/usr/bin/env bash
# Engine benchmarks for issue 2: establish time vs volume size, 4 KiB random writes with and
# without copy-on-write, background copy vs cp, bitmap memory. Prints Markdown tables (copied
# into BENCHMARKS.md, section "Engine (issue 2)"). Takes about 3-5 minutes plus the build.
#
#   bench/engine.sh                 # everything
#   bench/engine.sh establish       # one part: establish | writes | copy | bitmap
#
# Volumes go to a temporary directory under $TZERO_BENCH_DIR (default: the system temp dir; it
# needs ~5 GiB free); $TZERO_BENCH_SHM (default /dev/shm) hosts the sizes ext4 cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-tests}"
exec cargo bench -p tzero-engine --bench engine -- "$@"

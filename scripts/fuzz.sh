#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (libFuzzer through libfuzzer-sys, on stable
# Rust: no cargo-fuzz, no nightly) and runs each for SECS seconds (default 60)
# on a copy of its committed corpus, fuzz/corpus/<target>/, so a run never
# dirties the repository. Fails if any target crashes, leaks past the RSS
# limit or hangs; the input that did it is kept in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECS] [TARGET...]
#
# Needs a C++ compiler (g++ or clang++): libfuzzer-sys builds libFuzzer from
# its C++ sources.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(option_parser request_parser session api_json)
fi

# The flags cargo-fuzz passes, less its nightly-only ones (-Z sanitizer=address
# and friends): SanitizerCoverage's inline 8-bit counters, PC table and
# comparison tracing are what libFuzzer's feedback reads, and all of them
# are plain -C / LLVM options on stable rustc. Safe Rust needs no ASan; the
# debug assertions and overflow checks turn silent bugs into crashes.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros,
# which would otherwise be instrumented and fail to link without libFuzzer.
host=$(rustc -vV | sed -n 's/^host: //p')
(cd fuzz && cargo build --release --locked --target "$host" --bins -q)
bin="fuzz/target/$host/release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
printf '%-16s %8s %12s %10s\n' target seeds executions exec/s
for t in "${targets[@]}"; do
    mkdir -p "$work/$t/corpus" "$work/$t/crash"
    cp fuzz/corpus/"$t"/* "$work/$t/corpus/"
    seeds=$(find "$work/$t/corpus" -type f | wc -l)
    log="$work/$t/log"
    # A dictionary, where a target has one, gives it words it cannot guess
    # byte by byte (field names, edge numbers).
    dict=()
    if [ -f fuzz/dict/"$t".dict ]; then
        dict=(-dict=fuzz/dict/"$t".dict)
    fi
    # -timeout: one input may take at most 10 s (the session target's own
    # deadlines are 2 and 5 s); -rss_limit_mb: far above any honest input.
    if "$bin/$t" "$work/$t/corpus" -max_total_time="$secs" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="$work/$t/crash/" \
        "${dict[@]}" >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        mkdir -p fuzz/artifacts/"$t"
        cp "$work/$t/crash/"* fuzz/artifacts/"$t"/ 2>/dev/null || true
        echo "---- $t: last lines of libFuzzer's output" >&2
        tail -n 40 "$log" >&2
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    printf '%-16s %8s %12s %10s %s\n' "$t" "$seeds" "${execs:-?}" "${rate:-?}" "$status"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${failed[*]} failed; reproduce with $bin/<target> fuzz/artifacts/<target>/<file>" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${secs}s each, no crash"

#!/usr/bin/env bash
# Runs the subcar fuzz targets: `fuzz/run.sh <target|all> <seconds>`.
# Each target runs for <seconds> wall time at nice 19 on its corpus
# (fuzz/corpus/<target>), prints the executions and the result, then the
# corpus is minimised with `cargo fuzz cmin`. Crashes land in
# fuzz/artifacts/<target>/ (not committed). Logs: $FUZZ_LOG_DIR.
set -euo pipefail

cd "$(dirname "$0")"
TARGETS=(ws_client_message legacy_client_message document webhook_body config stream_request)
target=${1:?usage: fuzz/run.sh <target|all> <seconds>}
seconds=${2:?usage: fuzz/run.sh <target|all> <seconds>}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/fuzz-target}
log_dir=${FUZZ_LOG_DIR:-$HOME/.cache/subcar-fuzz-logs}
mkdir -p "$log_dir"

max_len() {
    case $1 in
        ws_client_message | legacy_client_message | document) echo 4096 ;;
        *) echo 8192 ;;
    esac
}

run_one() {
    local t=$1 log
    log="$log_dir/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    mkdir -p "corpus/$t" "artifacts/$t"
    local dict=() keep_going=()
    [[ -f "dict/$t.dict" ]] && dict=("-dict=dict/$t.dict")
    # FUZZ_KEEP_GOING=1: go on past crashes (a known, not yet fixed one)
    # in a forked child, recording each in artifacts/.
    [[ ${FUZZ_KEEP_GOING:-0} == 1 ]] && keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    echo "== $t: ${seconds}s, log $log"
    local start rc=0
    start=$(date +%s)
    nice -n 19 cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "${dict[@]}" "${keep_going[@]}" >"$log" 2>&1 || rc=$?
    local execs wall
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
    # -fork prints no final stats: the last status line has the count.
    [[ -n $execs ]] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
    wall=$(($(date +%s) - start))
    local found
    found=$(find "artifacts/$t" -newermt "@$start" -type f | wc -l)
    [[ $found -gt 0 ]] && echo "== $t: $found new input(s) in artifacts/$t/ (crashes, timeouts or OOMs)"
    if [[ $rc -eq 0 ]]; then
        echo "== $t: ${wall}s wall, ${execs:-?} executions, no crash"
    else
        echo "== $t: ${wall}s wall, ${execs:-?} executions, FAILED (exit $rc):"
        grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)' "$log" | head -20 || true
    fi
    nice -n 19 cargo +nightly fuzz cmin "$t" "corpus/$t" -- -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 -timeout=10 >>"$log" 2>&1 \
        && echo "== $t: corpus minimised to $(ls "corpus/$t" | wc -l) inputs" \
        || echo "== $t: cmin failed (see $log)"
    return $rc
}

if [[ $target == all ]]; then
    status=0
    for t in "${TARGETS[@]}"; do run_one "$t" || status=1; done
    exit $status
fi
run_one "$target"

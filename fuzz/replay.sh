#!/usr/bin/env bash
# CI replay of the fuzz corpora (docs/FUZZING.md): build every target with cargo-fuzz on
# the stable toolchain (libFuzzer without sanitizers), replay each checked-in corpus
# (`-runs=0`: every file once, fails on any crash or failed assertion), then fuzz each
# target briefly (FUZZ_SECONDS each, default 10 s; about one minute in all; 0 skips it).
#
# Needs: cargo-fuzz (`cargo install cargo-fuzz --locked`), a C++ compiler (libfuzzer-sys
# builds libFuzzer from source).
# New inputs found by the short runs go to a scratch directory, not into fuzz/corpus/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-10}"
targets=(control_codec signaling_frame ticket turn_username names session_jobs batch_reader)
declare -A dict=(
    [control_codec]=control.dict [signaling_frame]=signaling.dict [ticket]=ticket.dict
    [turn_username]=turn.dict [names]=names.dict [session_jobs]= [batch_reader]=batch.dict
)
declare -A max_len=(
    [control_codec]=16500 [signaling_frame]=8192 [ticket]=512 [turn_username]=1500
    [names]=1024 [session_jobs]=512 [batch_reader]=2048
)

cargo fuzz build --sanitizer none -O 2>&1 | tail -n 3
# cargo-fuzz puts the binaries under fuzz/target/<host triple>/release/.
bin_dir="$(dirname "$(find fuzz/target -path '*/release/control_codec' -type f | head -n 1)")"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

for t in "${targets[@]}"; do
    # The corpus, plus the reproducers of findings (fuzz/artifacts/<target>/F*): open
    # findings are tolerated by the targets unless FUZZ_STRICT is set (see
    # fuzz/fuzz_targets/known.rs), fixed ones must keep passing.
    # (libFuzzer takes either only files or only directories, so they are copied.)
    mkdir -p "$scratch/$t.repro"
    for f in "fuzz/artifacts/$t"/F*; do
        if [ -f "$f" ]; then cp "$f" "$scratch/$t.repro/"; fi
    done
    echo "== replay $t ($(find "fuzz/corpus/$t" "$scratch/$t.repro" -type f | wc -l) inputs)"
    if ! "$bin_dir/$t" -runs=0 -artifact_prefix="$scratch/$t-" "fuzz/corpus/$t" "$scratch/$t.repro" >"$scratch/$t.replay.log" 2>&1; then
        tail -n 40 "$scratch/$t.replay.log" >&2
        echo "replay $t FAILED" >&2
        exit 1
    fi
done

if [ "$seconds" -le 0 ]; then
    echo "fuzz replay: corpora passed (FUZZ_SECONDS=0: no fuzzing)"
    exit 0
fi
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "$scratch/$t"
    dict_arg=()
    if [ -n "${dict[$t]}" ]; then dict_arg=(-dict="fuzz/dicts/${dict[$t]}"); fi
    if ! "$bin_dir/$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" \
        "${dict_arg[@]}" -artifact_prefix="$scratch/$t-" -print_final_stats=1 \
        "$scratch/$t" "fuzz/corpus/$t" >"$scratch/$t.log" 2>&1; then
        tail -n 40 "$scratch/$t.log" >&2
        mkdir -p fuzz/artifacts/ci
        cp "$scratch/$t"-* fuzz/artifacts/ci/ 2>/dev/null || true
        echo "fuzz $t FAILED; crash input copied to fuzz/artifacts/ci/" >&2
        exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$scratch/$t.log" || true
done
echo "fuzz replay: all targets passed"

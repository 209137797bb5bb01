#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (issue 11). Not part of CI.
#
#   scripts/fuzz.sh                  every target, 60 s each
#   scripts/fuzz.sh rewrite 600      one target for 10 minutes
#   scripts/fuzz.sh all 600          every target, 10 minutes each, one after another
#
# Targets: rewrite (scan + apply on hostile JSON), hosted_path
# (parse_hosted_path), range (parse_range and serve::plan), classify
# (SourceMatcher::classify).
#
# Needs a nightly toolchain and cargo-fuzz; both are installed when missing.
# The corpus of each target is kept in fuzz/corpus/<target> between runs
# (git ignores it). A crash is saved in fuzz/artifacts/<target>/ and makes the
# script exit non-zero; replay it with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
#
# FUZZ_SANITIZER=address turns AddressSanitizer on (the crate forbids unsafe
# code, so the default is none: about twice the executions). FUZZ_ARGS passes
# more libFuzzer flags, e.g. FUZZ_ARGS="-jobs=2 -workers=2".
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

TARGETS=(rewrite hosted_path range classify)
target="${1:-all}"
secs="${2:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

run() {
    local t="$1" dict=()
    mkdir -p "fuzz/corpus/$t"
    if [ -f "fuzz/dicts/$t.dict" ]; then
        dict=("-dict=$PWD/fuzz/dicts/$t.dict")
    fi
    echo "== fuzzing $t for ${secs}s"
    # shellcheck disable=SC2086
    cargo +nightly fuzz run --sanitizer "$sanitizer" --debug-assertions "$t" \
        "$PWD/fuzz/corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-}
}

if [ "$target" = all ]; then
    for t in "${TARGETS[@]}"; do run "$t"; done
else
    run "$target"
fi

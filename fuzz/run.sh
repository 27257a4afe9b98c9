#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: ./fuzz/run.sh [seconds per target, default 60]
#
# cargo fuzz wants nightly for its sanitizer flags; this machine has one stable toolchain, so
# RUSTC_BOOTSTRAP=1 lets stable accept them. Inputs that crash land in fuzz/artifacts/<target>/;
# copy each (after `cargo fuzz tmin`) into fuzz/regressions/<target>/, where the test suite
# (tests/fuzzed) replays it on every run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
status=0
for target in http wire; do
    mkdir -p "corpus/$target"
    echo "== $target: ${seconds}s"
    cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" "regressions/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 || status=$?
done
exit $status

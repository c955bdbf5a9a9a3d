#!/usr/bin/env bash
# Builds and runs a fuzz target on a stable toolchain, the way `cargo fuzz run -s none` does
# (libFuzzer with SanitizerCoverage, no sanitizer).
#   fuzz/run.sh export_parser -max_total_time=600
# With a nightly toolchain and cargo-fuzz, `cargo fuzz run export_parser` works as usual.
set -euo pipefail
cd "$(dirname "$0")"
target="$1"
shift
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-target}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc macros.
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --target "$host" --bin "$target"
mkdir -p "corpus/$target"
cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
exec "$CARGO_TARGET_DIR/$host/release/$target" "corpus/$target" -dict=dict/"$target".dict "$@"

#!/usr/bin/env bash
# Runs the GPU test set with every test in a process of its own, all at once, and prints one line
# per test: binary, test, result, seconds.
#
#     benches/gpu/test_set.sh LOG_DIR TEST_BINARY...
#
# The test binaries are those of
#     cargo test --release --features cuda --no-run -p tigerflow-cuda -p tigerflow-finetune
# (`kernels`, `gpu_bf16`, `gpu_f32`). On a cold kernel cache a test compiles for minutes, and the
# tests of one process share one compiling thread, so side by side the whole set takes about as
# long as its slowest test. Each test gets a cache of its own under LOG_DIR (cold: what a new
# machine sees); set TIGERFLOW_CACHE to share a warm one instead. PER_TEST_S (default 560)
# bounds each test.
set -uo pipefail

logs=${1:?usage: test_set.sh LOG_DIR TEST_BINARY...}
shift
mkdir -p "$logs"
limit=${PER_TEST_S:-560}

for bin in "$@"; do
    name=$(basename "$bin" | sed 's/-[0-9a-f]\{16\}$//')
    for test in $("$bin" --list --format terse 2>/dev/null | sed -n 's/: test$//p'); do
        (
            cache=${TIGERFLOW_CACHE:-$logs/cache.$name.$test}
            start=$SECONDS
            TIGERFLOW_CACHE=$cache timeout "$limit" "$bin" --exact "$test" --test-threads 1 \
                >"$logs/$name.$test.log" 2>&1
            rc=$?
            seconds=$((SECONDS - start))
            case $rc in
                0) result=pass ;;
                124) result=timeout ;;
                *) result="FAIL($rc)" ;;
            esac
            printf '%s\t%s\t%s\t%d\n' "$name" "$test" "$result" "$seconds" >"$logs/$name.$test.result"
        ) &
    done
done
wait

printf 'binary\ttest\tresult\tseconds\n'
cat "$logs"/*.result | sort
! grep -qv $'\tpass\t' "$logs"/*.result

#!/usr/bin/env bash
# The long kill -9 loop: 100 rounds of "start a run, kill -9 it at a random moment, check that
# every stage marked done in pipeline.lock has its complete output", then a final run that must
# finish correctly. The test suite runs the same loop 20 times.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --test engine_kill -- --ignored --nocapture kill_9_a_hundred_times

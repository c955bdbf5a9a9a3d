#!/usr/bin/env bash
# No-op run of a 7-stage pipeline holding 1 GB of artifacts: tigerflow vs DVC, side by side.
#
#   benches/engine/bench.sh [TIGERFLOW_BIN] [DVC_BIN]
#
# Needs hyperfine (`apt-get install hyperfine`) and DVC (`pip install dvc` into a venv outside
# the repository). Work directories go under $BENCH_DIR (default: a temporary directory).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tigerflow="${1:-$here/../../target/release/tigerflow}"
dvc="${2:-dvc}"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work/tigerflow" "$work/dvc"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "tigerflow: $tigerflow"
echo "dvc: $("$dvc" --version)"

cp "$here/pipeline.toml" "$work/tigerflow/"
(cd "$work/tigerflow" && "$tigerflow" run --jobs 1 > /dev/null)
du -sh "$work/tigerflow/artifacts"

cp "$here/dvc.yaml" "$work/dvc/"
(cd "$work/dvc" && { [ -d .dvc ] || "$dvc" init --no-scm -q; } && "$dvc" repro -q > /dev/null)
du -sh "$work/dvc/out"

# Files just written are hashed again once ("racy" mtimes); warm-up runs settle both tools.
hyperfine --shell=none --warmup 3 --min-runs 20 \
  --export-markdown "$work/results.md" \
  -n "tigerflow run (no-op)" "$tigerflow -C $work/tigerflow run" \
  -n "dvc repro (no-op)" "$dvc --cd $work/dvc repro"
cat "$work/results.md"

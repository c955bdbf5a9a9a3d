#!/usr/bin/env bash
# parse → chunk → split of a generated 1,000,000-message export: `tigerflow run` against the
# plain Python script doing the same steps (json + pandas), each under /usr/bin/time -v.
#
#   benches/data/bench.sh [TIGERFLOW_BIN] [PYTHON]
#
# PYTHON needs pandas and pyarrow (`pip install pandas pyarrow` into a venv). Work files go
# under $BENCH_DIR (default: a temporary directory); the export is generated once and reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tigerflow="${1:-$here/../../target/release/tigerflow}"
python="${2:-python3}"
work="${BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work/tigerflow"

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ ! -s "$work/result.json" ]; then
  python3 "$here/generate_export.py" --messages 1000000 --seed 1 > "$work/result.json"
fi
du -h "$work/result.json"

# The default pipeline's three data stages with their default parameters.
cat > "$work/tigerflow/pipeline.toml" <<TOML
[stages.parse]
uses = "telegram"
inputs = { export = "$work/result.json" }

[stages.chunk]
uses = "chunk"
inputs = { messages = "@parse" }

[stages.split]
uses = "split"
inputs = { dataset = "@chunk" }
TOML

measure() {
  local name="$1"
  shift
  /usr/bin/time -v "$@" 2> "$work/$name.time" > "$work/$name.out" || {
    cat "$work/$name.time"
    exit 1
  }
  printf '%-10s wall %s  user %ss  sys %ss  peak RSS %s kB\n' "$name" \
    "$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/$name.time")" \
    "$(sed -n 's/.*User time (seconds): //p' "$work/$name.time")" \
    "$(sed -n 's/.*System time (seconds): //p' "$work/$name.time")" \
    "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/$name.time")"
}

measure tigerflow "$tigerflow" -C "$work/tigerflow" run --force
grep -h '\] ' "$work/tigerflow.time" | sed 's/^/  /' || true
measure python "$python" "$here/reference.py" "$work/result.json" "$work/python"

#!/usr/bin/env bash
# Greedy generation speed on CPU: tigerflow vs transformers on the same GGUF model and prompt.
# Usage: benches/llm/run.sh MODEL.gguf [TOKENS]
# Needs python with torch, transformers and gguf for the reference. Prints the machine first.
set -euo pipefail
model=${1:?usage: run.sh MODEL.gguf [TOKENS]}
tokens=${2:-64}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
prompt=$'### SZ: Quem vem a Lisboa no natal?\n### Ana:'
cargo build --release --quiet
for _ in 1 2 3; do
  "${CARGO_TARGET_DIR:-target}/release/tigerflow" generate --model "$model" --prompt "$prompt" \
    --max-new-tokens "$tokens" 2>&1 >/dev/null | grep tokens/s
done
python "$(dirname "$0")/transformers_generate.py" "$model" --prompt "$prompt" --tokens "$tokens" --threads "$(nproc)" | tail -1

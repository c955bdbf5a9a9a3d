#!/usr/bin/env bash
# The default pipeline with the reference recipe on a CUDA device, for a machine that cannot
# download a model: a random SmolLM2-135M-shaped model stands in for the real one.
# Usage: benches/gpu/pipeline.sh [TIGERFLOW] [MODEL_DIR]
# Runs it twice (cold and warm GPU kernel cache), then generates from the adapter.
set -euo pipefail
tf=${1:-target/release/tigerflow}
model=${2:-/tmp/smollm2-random}
here=$(dirname "$0")
[ -f "$model/config.json" ] || python3 "$here/random_model.py" smollm2-135m "$model"
recipe=(
  --set train.base_model="$model" --set train.device=cuda --set eval.device=cuda
  --set train.sequence_len=4096 --set train.lora_r=32 --set train.micro_batch_size=2
  --set train.gradient_accumulation_steps=4 --set train.learning_rate=2e-4
  --set train.warmup_steps=10 --set train.eval_steps=20 --set train.gradient_checkpointing=true
  --set eval.sequence_len=4096
)
"$tf" run --to split
for attempt in cold warm; do
  echo "== tigerflow run --from train ($attempt GPU kernel cache)"
  start=$(date +%s)
  "$tf" run --from train "${recipe[@]}"
  echo "== $attempt: $(( $(date +%s) - start )) s"
done
"$tf" generate --device cuda --model "$model" --prompt $'### SZ: Quem vem a Lisboa no natal?\n### Ana:' \
  --max-new-tokens 32

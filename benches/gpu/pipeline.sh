#!/usr/bin/env bash
# The default pipeline with the reference recipe on a CUDA device, for a machine that cannot
# download a model: a random SmolLM2-135M-shaped model stands in for the real one.
# Usage: benches/gpu/pipeline.sh [TIGERFLOW] [MODEL_DIR]
# Runs `run --from train` (train, eval, push) and a generation, and prints the seconds of each.
# Run it twice to see a cold and a warm GPU kernel cache ($TIGERFLOW_CACHE/cubecl).
set -euo pipefail
. "$(dirname "$0")/args.sh"
recipe=(
  --set train.base_model="$model" --set train.device=cuda --set eval.device=cuda
  --set train.sequence_len=4096 --set train.lora_r=32 --set train.micro_batch_size=2
  --set train.gradient_accumulation_steps=4 --set train.learning_rate=2e-4
  --set train.warmup_steps=10 --set train.eval_steps=20 --set train.gradient_checkpointing=true
  --set eval.sequence_len=4096
)
"$tf" run --to split
start=$(date +%s)
"$tf" run --from train "${recipe[@]}"
echo "== run --from train: $(( $(date +%s) - start )) s"
start=$(date +%s)
"$tf" generate --device cuda --model "$model" --prompt $'### SZ: Quem vem a Lisboa no natal?\n### Ana:' \
  --max-new-tokens 32
echo "== generate 32 tokens: $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Data parallelism on two GPUs against one GPU, on the default pipeline's data with a random
# SmolLM2-135M-shaped model (the GPU machines cannot download the real one). Both runs see the
# same global batch: 2 rows x 4 micro-batches per step on one GPU, 2 x 2 on each of two GPUs.
# Prints both loss curves side by side, their largest difference and the tokens/s of each.
# Usage: benches/gpu/data_parallel.sh [TIGERFLOW] [MODEL_DIR]
set -euo pipefail
. "$(dirname "$0")/args.sh"
common=(
  --set train.base_model="$model" --set train.sequence_len=512 --set train.micro_batch_size=2
  --set train.max_steps=15 --set train.eval_steps=5 --set train.warmup_steps=2
  --set train.learning_rate=2e-4 --set train.lora_r=32 --set train.gradient_checkpointing=true
)
"$tf" run --to split
# The metrics.jsonl the last run wrote (the stage's output folder depends on its parameters).
newest_metrics() { find artifacts -name metrics.jsonl -newer "$1" | head -n 1; }
mark=$(mktemp)
"$tf" run --only train --force "${common[@]}" --set train.device=cuda \
  --set train.gradient_accumulation_steps=4
one=$(newest_metrics "$mark")
touch "$mark"
"$tf" run --only train --force "${common[@]}" --set 'train.devices=["cuda:0", "cuda:1"]' \
  --set train.gradient_accumulation_steps=2
two=$(newest_metrics "$mark")
python3 - "$one" "$two" <<'PY'
import json, sys
def read(path):
    lines = [json.loads(l) for l in open(path)]
    return ({l["step"]: l["loss"] for l in lines if l.get("loss") is not None},
            {l["step"]: l["eval_loss"] for l in lines if l.get("eval_loss") is not None},
            [l["tokens_per_s"] for l in lines if l.get("tokens_per_s")])
(l1, e1, t1), (l2, e2, t2) = read(sys.argv[1]), read(sys.argv[2])
print("step  loss 1 GPU  loss 2 GPUs")
for s in sorted(l1):
    print(f"{s:4}  {l1[s]:10.5f}  {l2.get(s, float('nan')):11.5f}")
rel = max(abs(l1[s] - l2[s]) / abs(l1[s]) for s in l1)
erel = max((abs(e1[s] - e2[s]) / abs(e1[s]) for s in e1), default=0.0)
# The first steps compile kernels; the steady state is the rest.
speed = lambda t: sum(t[2:]) / len(t[2:])
print(f"largest relative difference: train loss {rel:.2e}, eval loss {erel:.2e}")
print(f"tokens/s (steps 3+): 1 GPU {speed(t1):.0f}, 2 GPUs {speed(t2):.0f}, ratio {speed(t2) / speed(t1):.2f}")
PY

"""Scores a tigerflow adapter with transformers + PEFT, for comparison with tigerflow's eval stage.

Prints the mean token NLL of the base model and of the base with the adapter, on the first N
conversations of a test.jsonl, each wrapped as BOS + tokens + EOS like tigerflow's training data.
Compare with `metrics.json` of an eval stage run with `load_in_4bit = false` (transformers
dequantizes a GGUF base to a dense model) and the same `max_eval_samples`.

    python stages/eval/tests/peft_eval_loss.py MODEL_DIR GGUF_FILE ADAPTER_DIR TEST_JSONL N
"""

import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, gguf_file, adapter_dir, test_jsonl, n = sys.argv[1:6]
tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf_file)
base = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf_file, dtype=torch.float32, attn_implementation="eager")
texts = [json.loads(line)["text"] for line in open(test_jsonl, encoding="utf-8")][: int(n)]


def mean_nll(model):
    nll, tokens = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id] + tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids=x).logits[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
        tokens += len(ids) - 1
    return nll / tokens, tokens


print("base", mean_nll(base))
print("tuned", mean_nll(PeftModel.from_pretrained(base, adapter_dir).eval()))

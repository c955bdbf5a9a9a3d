"""Greedy-generation speed of transformers on a GGUF model, the reference for tigerflow's
`generate` numbers in BENCHMARKS.md.

    python benches/llm/transformers_generate.py MODEL.gguf --prompt "..." --tokens 64 --threads 2

transformers dequantizes the GGUF to float32 on load, the same precision tigerflow computes in.
Prints the generated text and one line "transformers: N tokens in S s (T tokens/s)".
"""

import argparse
import pathlib
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=pathlib.Path)
    parser.add_argument("--prompt", default="### SZ: Quem vem a Lisboa no natal?\n### Ana:")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    directory, name = str(args.model.parent), args.model.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, torch_dtype=torch.float32).eval()
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    best = None
    with torch.inference_mode():
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = model.generate(
                ids,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
            seconds = time.perf_counter() - start
            best = seconds if best is None else min(best, seconds)
    new = out[0, ids.shape[1]:]
    print(tokenizer.decode(new, skip_special_tokens=True))
    print(f"transformers: {len(new)} tokens in {best:.2f} s ({len(new) / best:.1f} tokens/s), "
          f"torch {torch.__version__}, {args.threads} threads")


if __name__ == "__main__":
    main()

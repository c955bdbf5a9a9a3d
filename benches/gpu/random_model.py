"""Writes a model directory with random weights of a named shape (config.json, safetensors and a
tokenizer.json copied from a small fixture), for running the pipeline on a machine that cannot
download a model.

    python3 benches/gpu/random_model.py smollm2-135m OUT_DIR [--tokenizer FILE]
"""

import argparse
import pathlib
import shutil

import torch
from transformers import LlamaForCausalLM

from peft_reference import SHAPES, llama_config

FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "crates/llm/tests/fixtures/gqa_tied/tokenizer.json"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("shape", choices=SHAPES)
    p.add_argument("out")
    p.add_argument("--tokenizer", default=str(FIXTURE))
    a = p.parse_args()
    cfg = llama_config(a.shape, max_position_embeddings=8192)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(a.out)
    shutil.copy(a.tokenizer, pathlib.Path(a.out) / "tokenizer.json")
    print(f"{a.out}: {sum(t.numel() for t in model.parameters()) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()

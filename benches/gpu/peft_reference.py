"""The PyTorch reference for `tigerflow bench train`: the same model shape with random weights,
LoRA on all linear layers through PEFT, AdamW, bf16, SDPA attention, gradient checkpointing,
and the same measurements (tokens/s, step breakdown, peak memory, MFU).

    python3 benches/gpu/peft_reference.py --shape smollm2-135m [--no-recompute] [--json out.json]

Differences, stated: the base is dense bf16 (no bitsandbytes on the test machine), and rows are
plain causal rows of random tokens (transformers separates packed samples only with
flash-attention-2, which the test machine lacks); both make the reference no slower than the
recipe it stands for.
"""

import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    # vocab, hidden, intermediate, layers, heads, kv heads, rope theta, tied
    "tiny": (256, 64, 128, 2, 4, 2, 10_000.0, True),
    "smollm2-135m": (49_152, 576, 1536, 30, 9, 3, 100_000.0, True),
    "llama2-7b": (32_000, 4096, 11_008, 32, 32, 32, 10_000.0, False),
}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def llama_config(shape: str, **extra) -> LlamaConfig:
    """The transformers config of a named shape, as `tigerflow bench train` builds it."""
    vocab, hidden, inter, layers, heads, kv, theta, tied = SHAPES[shape]
    return LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, rope_theta=theta,
        tie_word_embeddings=tied, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, **extra,
    )


def matmul_params(cfg: LlamaConfig) -> int:
    """Parameters in matrix products per token: projections and the output head."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    hd = h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    return cfg.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * i) + cfg.vocab_size * h


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=SHAPES, default="smollm2-135m")
    p.add_argument("--sequence-len", type=int, default=4096)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--lora-r", type=int, default=32)
    p.add_argument("--no-recompute", action="store_true")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one step")
    p.add_argument("--json")
    a = p.parse_args()

    cfg = llama_config(a.shape, max_position_embeddings=4096, attn_implementation=a.attn)
    vocab = cfg.vocab_size
    torch.manual_seed(0)
    started = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    recompute = not a.no_recompute
    if recompute:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(
        model, LoraConfig(r=a.lora_r, lora_alpha=16, lora_dropout=0.05, target_modules=ALL_LINEAR)
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    torch.cuda.synchronize()
    load_s = time.perf_counter() - started

    rows, length = a.micro_batch_size, a.sequence_len
    ids = torch.randint(3, vocab, (rows, length), device="cuda")

    def sync_time(fn):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        return out, time.perf_counter() - t

    def step():
        def fwd_bwd():
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            return loss.item()

        def update():
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        loss, micro_s = sync_time(fwd_bwd)
        _, opt_s = sync_time(update)
        return loss, micro_s, opt_s

    def forward_only():
        return sync_time(lambda: model(input_ids=ids, labels=ids).loss)[1]

    t = time.perf_counter()
    loss_first, _, _ = step()
    first_step_s = time.perf_counter() - t
    for _ in range(1, a.warmup_steps):
        step()
    torch.cuda.reset_peak_memory_stats()
    total = {"forward_ms": 0.0, "backward_ms": 0.0, "optimizer_ms": 0.0}
    measured = 0.0
    loss_last = loss_first
    for _ in range(a.steps):
        loss_last, micro_s, opt_s = step()
        measured += micro_s + opt_s
        fwd_s = forward_only()
        total["forward_ms"] += fwd_s * 1e3
        total["backward_ms"] += max(micro_s - fwd_s, 0.0) * 1e3
        total["optimizer_ms"] += opt_s * 1e3
    n = a.steps
    step_ms = measured * 1e3 / n
    tokens = rows * length
    report = {
        "shape": a.shape,
        "backend": f"torch {torch.__version__} + peft, bf16, {a.attn}",
        "device": torch.cuda.get_device_name(),
        "sequence_len": length,
        "micro_batch_size": rows,
        "lora_r": a.lora_r,
        "gradient_checkpointing": recompute,
        "load_s": load_s,
        "first_step_s": first_step_s,
        "step_ms": step_ms,
        "tokens_per_s": tokens / (step_ms / 1e3),
        "breakdown": {k: v / n for k, v in total.items()},
        "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(),
        "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(),
        "matmul_params": matmul_params(cfg),
        "flops_per_token": (6 if recompute else 4) * matmul_params(cfg),
        "loss_first": loss_first,
        "loss_last": loss_last,
    }
    if a.peak_tflops:
        report["mfu"] = report["tokens_per_s"] * report["flops_per_token"] / (a.peak_tflops * 1e12)
    for k, v in report.items():
        print(f"{k:28} {v}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))


if __name__ == "__main__":
    main()

"""Writes the tiny-model fixtures the tigerflow-llm tests compare against.

Each fixture directory holds a random Llama checkpoint in Hugging Face layout (config.json,
model.safetensors, tokenizer.json), the same weights as GGUF (F32 and F16, written the way
llama.cpp's converter writes them: q/k rows permuted, llama.cpp tensor names), and
reference.safetensors with inputs and the logits transformers computes for them.
quant_blocks.safetensors holds Q4_0/Q4_1/Q8_0 blocks and their dequantization by the gguf
package's reference formulas.

Run once wherever torch, transformers, tokenizers and gguf are installed:
    python crates/llm/tests/make_fixtures.py
"""

import json
import pathlib

import gguf
import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

OUT = pathlib.Path(__file__).parent / "fixtures"
VOCAB = 320
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "### SZ: Quem vem a Lisboa no natal?",
    "### Ana: Eu vou! Chego dia 23 de manhã.",
    "### SZ: Boa, então jantamos juntos no dia 24.",
    "The quick brown fox jumps over the lazy dog 1234567890.",
    "Olá, tudo bem? Hoje está frio em Lisboa e no Porto.",
]
TOKENIZER_PROBES = [
    "### SZ: Quem vem a Lisboa no natal?",
    "Jantamos às 20h, 2024 foi bom!",
    "<|im_start|>user\nOlá<|im_end|>",
]

CONFIGS = {
    "gqa_tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "mha_untied_linear": dict(
        num_attention_heads=4,
        num_key_value_heads=4,
        tie_word_embeddings=False,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
    ),
    "gqa_llama3": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 4.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
}


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 16,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return tok


def build_model(name, overrides):
    torch.manual_seed(sum(map(ord, name)))
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        **overrides,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.08)
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model


def logits_for(model, ids, positions=None):
    with torch.no_grad():
        return model(input_ids=ids, position_ids=positions).logits.float().numpy()


def permute_for_gguf(w, n_head):
    # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, tok, f16):
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"] if hasattr(c, "rope_parameters") and c.rope_parameters else c.rope_theta)
    w.add_rope_dimension_count(c.head_dim)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_vocab_size(c.vocab_size)
    scaling = getattr(c, "rope_scaling", None) or {}
    if scaling.get("rope_type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(scaling["factor"])
    vocab = tok.get_vocab()
    tokens = [None] * VOCAB
    for t, i in vocab.items():
        tokens[i] = t
    types = []
    for i in range(VOCAB):
        if tokens[i] is None:
            tokens[i] = f"[PAD{i}]"
            types.append(gguf.TokenType.UNUSED)
        elif tokens[i] in SPECIALS:
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = json.loads(tok.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        a = t.float().numpy()
        if name.startswith("model.layers."):
            i, rest = name[len("model.layers."):].split(".", 1)
            module = rest.rsplit(".", 1)[0]
            out = f"blk.{i}.{per_layer[module]}.weight"
            if module == "self_attn.q_proj":
                a = permute_for_gguf(a, c.num_attention_heads)
            if module == "self_attn.k_proj":
                a = permute_for_gguf(a, c.num_key_value_heads)
        else:
            out = names[name]
        # Like llama.cpp, norms (1-D) stay F32 in an F16 file.
        if f16 and a.ndim == 2:
            a = a.astype(np.float16)
        w.add_tensor(out, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    tok = make_tokenizer()
    probes = {f"probe_{i}": np.array(tok.encode(p).ids, dtype=np.int64) for i, p in enumerate(TOKENIZER_PROBES)}
    for name, overrides in CONFIGS.items():
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        model = build_model(name, overrides)
        model.save_pretrained(d, safe_serialization=True)
        for extra in ("generation_config.json",):
            (d / extra).unlink(missing_ok=True)
        tok.save(str(d / "tokenizer.json"))

        g = torch.Generator().manual_seed(7)
        ids = torch.randint(3, VOCAB, (2, 12), generator=g)
        a, b = ids[0, :7], ids[1, :5]
        ref = {
            "input_ids": ids.numpy(),
            "logits": logits_for(model, ids),
            # Far positions exercise the rope scaling.
            "far_positions": (torch.arange(12) * 9 + 3).repeat(2, 1).numpy(),
            "far_logits": logits_for(model, ids, (torch.arange(12) * 9 + 3).repeat(2, 1)),
            # Two samples packed in one row must give each sample's own logits.
            "packed_ids": torch.cat([a, b]).unsqueeze(0).numpy(),
            "packed_logits": np.concatenate(
                [logits_for(model, a.unsqueeze(0)), logits_for(model, b.unsqueeze(0))], axis=1
            ),
        }
        with torch.no_grad():
            prompt = ids[:1, :6]
            gen = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        ref["greedy_prompt"] = prompt.numpy()
        ref["greedy_tokens"] = gen[0, 6:].numpy()
        ref.update(probes)

        # llama.cpp stores Llama 3 scaling as a rope_freqs tensor, which tigerflow refuses, so
        # that fixture has no GGUF.
        if "llama3" not in name:
            write_gguf(d / "model-f32.gguf", model, tok, f16=False)
            write_gguf(d / "model-f16.gguf", model, tok, f16=True)
        # The F16 file's reference: the same model with its matrices rounded to f16.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.ndim == 2:
                    p.copy_(p.half().float())
        ref["logits_f16"] = logits_for(model, ids)
        save_numpy({k: np.ascontiguousarray(v) for k, v in ref.items()}, str(d / "reference.safetensors"))

    rng = np.random.default_rng(3)
    blocks = (rng.standard_normal(32 * 8) * rng.uniform(0.01, 3.0, 8).repeat(32)).astype(np.float32)
    quant = {"input": blocks}
    for kind in ("Q4_0", "Q4_1", "Q8_0"):
        t = gguf.GGMLQuantizationType[kind]
        raw = gguf.quants.quantize(blocks.reshape(8, 32), t)
        quant[f"{kind}_raw"] = np.frombuffer(raw.tobytes(), dtype=np.uint8).copy()
        quant[f"{kind}_dequant"] = gguf.quants.dequantize(raw, t).astype(np.float32).reshape(-1)
    save_numpy(quant, str(OUT / "quant_blocks.safetensors"))


if __name__ == "__main__":
    main()

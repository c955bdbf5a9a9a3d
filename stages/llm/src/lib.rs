//! Llama-family models on burn: sources, tokenizer, NF4, LoRA and generation.

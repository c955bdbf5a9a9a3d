//! Llama-family models on burn: sources, tokenizer, NF4, LoRA and generation.

pub mod backend;
pub mod config;
pub mod linear;
pub mod model;
pub mod rope;
pub mod nf4;
pub mod lora;
pub mod peft;
pub mod gguf;
pub mod gguf_weights;
pub mod quant;
pub mod safetensors_dir;
pub mod weights;
pub mod tokenizer;
pub mod generate;
pub mod sampling;
pub mod open;
pub mod sources;

//! Llama-family models on burn: sources, tokenizer, NF4, LoRA and generation.

pub mod adapters;
pub mod attention;
pub mod backend;
pub mod concat;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_ops;
pub mod device;
pub mod dropout;
pub mod failure;
pub mod generate;
pub mod gguf;
pub mod gguf_weights;
pub mod linear;
pub mod lora;
pub mod loss;
pub mod model;
pub mod nf4;
pub mod open;
pub mod peft;
pub mod quant;
pub mod rope;
pub mod safetensors_dir;
pub mod sampling;
pub mod sources;
pub mod tokenizer;
pub mod weights;

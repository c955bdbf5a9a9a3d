//! Llama-family models on burn: sources, tokenizer, NF4, LoRA and generation.

pub mod adapters;
pub mod attention;
pub mod backend;
pub mod concat;
pub mod config;
/// tigerflow's CUDA operations and runtime settings (`tigerflow-cuda`), for callers that ask
/// about them (tests, benchmarks); the model reaches them through its own functions.
#[cfg(feature = "cuda")]
pub use tigerflow_cuda as cuda;
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

//! The GPU test set in bf16: the CPU reference checks on the CUDA backend (see
//! `common/gpu.rs`). Needs `--features cuda` and an NVIDIA GPU. The checks of each CUDA
//! operation on its own are `tigerflow-cuda`'s (`crates/cuda/tests/kernels.rs`).
#![cfg(feature = "cuda")]

mod common;

use common::gpu::*;

type M = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;

#[test]
fn logits_match_the_cpu() {
    check_logits::<M>(&cuda(), BF16);
}

#[test]
fn nf4_dequantizes_as_on_the_host() {
    check_nf4::<M>(&cuda(), BF16, false);
}

#[test]
fn training_matches_peft_packing_and_accumulation() {
    check_training::<M>(&cuda(), BF16);
}

#[test]
fn recompute_matches_the_full_graph() {
    check_recompute_on::<M>(&cuda(), BF16);
}

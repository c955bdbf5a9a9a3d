//! The GPU test set in f32: the CPU reference checks on the CUDA backend (see
//! `common/gpu.rs`). Needs `--features cuda` and an NVIDIA GPU.
#![cfg(feature = "cuda")]

mod common;

use common::gpu::*;

type M = tigerflow_llm::backend::CudaBackend<f32>;

#[test]
fn logits_match_the_cpu() {
    check_logits::<M>(&cuda(), F32);
}

#[test]
fn nf4_dequantizes_as_on_the_host() {
    check_nf4::<M>(&cuda(), F32, true);
}

#[test]
fn training_matches_peft_packing_and_accumulation() {
    check_training::<M>(&cuda(), F32);
}

#[test]
fn recompute_matches_the_full_graph() {
    check_recompute_on::<M>(&cuda(), F32);
}

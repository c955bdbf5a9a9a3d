//! Dropout for training, with masks that a seed reproduces.
//!
//! Gradient checkpointing runs each decoder layer's forward pass twice, and both runs must drop
//! the same elements, so the trainer calls [`seed`] before each. burn's operations draw masks
//! from the backend's generator, which `seed` restarts; with the `cuda` feature, bf16 tensors on
//! the CUDA backend take a kernel whose masks are hashes of a seed from a stream that `seed`
//! restarts too (`tigerflow_cuda::dropout`), and which keeps no mask for the backward pass.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// Restarts the dropout masks of this thread on `device` from `seed`.
pub fn seed<B: Backend>(device: &B::Device, seed: u64) {
    B::seed(device, seed);
    #[cfg(feature = "cuda")]
    tigerflow_cuda::seed_dropout(seed);
}

/// Zeroes each element of `x` with probability `p` and scales the others by `1 / (1 − p)`;
/// `0 < p < 1`: callers skip it at 0, where the kernel's 32-bit threshold would still drop one
/// element in 2³².
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    let keep = 1.0 - p;
    #[cfg(feature = "cuda")]
    let x = match tigerflow_cuda::dropout(x, keep) {
        Ok(dropped) => return dropped,
        Err(x) => x,
    };
    let mask = x.random_like(Distribution::Bernoulli(keep));
    x.mul(mask).div_scalar(keep)
}

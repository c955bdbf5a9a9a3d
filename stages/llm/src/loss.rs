//! The training loss: the summed negative log-likelihood of the labels, the one place that
//! chooses how it is computed.
//!
//! The reference is burn's `log_softmax` and `gather`. With the `cuda` feature, bf16 logits on
//! the CUDA backend take tigerflow's kernels instead (`cuda_ops::nll_sum`), which never hold the
//! log-probabilities and sum in f32; the GPU test set checks them against the reference.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

/// Sum of the negative log-likelihood of `labels` `[B, L, 1]` over the positions where
/// `weights` `[B, L, 1]` is 1 (0 elsewhere); `logits` `[B, L, V]`.
pub fn nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 3, Int>,
    weights: Tensor<B, 3>,
) -> Tensor<B, 1> {
    #[cfg(feature = "cuda")]
    let (logits, labels, weights) = match crate::cuda_ops::nll_sum(logits, labels, weights) {
        Ok(loss) => return loss,
        Err(inputs) => inputs,
    };
    let picked = log_softmax(logits, 2).gather(2, labels);
    picked.mul(weights).sum().neg()
}

/// The value of a one-element loss, read at the precision it was computed in (reading it as
/// the backend's float type would round an f32 sum to bf16's 8 bits).
pub fn loss_value<B: Backend>(loss: Tensor<B, 1>) -> f64 {
    loss.into_data()
        .iter::<f64>()
        .next()
        .expect("a loss holds one value")
}

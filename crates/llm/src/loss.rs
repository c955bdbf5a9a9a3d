//! The training loss: the summed negative log-likelihood of the labels, the one place that
//! chooses how it is computed.
//!
//! The reference is burn's `log_softmax` and `gather`. With the `cuda` feature, bf16 logits on
//! the CUDA backend take tigerflow's kernels instead (`tigerflow_cuda::nll_sum`), which never hold the
//! log-probabilities and sum in f32; the GPU test set checks them against the reference.
//!
//! The model's head computes its logits a chunk of tokens at a time ([`head_nll_sum`]): burn's
//! CUDA allocator places each allocation in pages sized by the device's memory (a quarter of it,
//! then quarters of that), and on an 80 GB GPU any allocation above 312 MB takes a slice of a
//! 5 GiB page. One SmolLM2 micro-batch's logits (8192 × 49152 bf16, 805 MB) made its training
//! reserve 6.2 GiB where it used about 2 (docs/perf-log.md, "Memory: the logits in chunks").

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, backend::Backend};

use crate::model::Llama;

/// The most bytes of logits [`head_nll_sum`] computes at once (give or take the rounding of the
/// chunk count to a power of two, which keeps every chunk one shape).
const LOGITS_CHUNK_BYTES: usize = 1 << 27;

/// `nll_sum(model.logits(normed), labels, weights)` for the final-normed hidden states `normed`
/// `[B, L, hidden]`, computing the logits of at most about [`LOGITS_CHUNK_BYTES`] at a time.
pub fn head_nll_sum<B: Backend>(
    model: &Llama<B>,
    normed: Tensor<B, 3>,
    labels: Tensor<B, 3, Int>,
    weights: Tensor<B, 3>,
) -> Tensor<B, 1> {
    let [batch, len, _] = normed.dims();
    let vocab = model.embed_tokens.val().dims()[0];
    let tokens = chunk_tokens(batch * len, vocab, normed.dtype().size());
    chunked_nll_sum(|h| model.logits(h), normed, labels, weights, tokens)
}

/// Tokens per chunk for `tokens` tokens of logits over `vocab` entries of `bytes` bytes: the
/// fewest chunks, a power of two of them, that keep each within about [`LOGITS_CHUNK_BYTES`].
fn chunk_tokens(tokens: usize, vocab: usize, bytes: usize) -> usize {
    let chunks = (tokens * vocab * bytes)
        .div_ceil(LOGITS_CHUNK_BYTES)
        .next_power_of_two();
    tokens.div_ceil(chunks)
}

/// The summed NLL of `head(hidden)`'s logits, `tokens` rows of `hidden` at a time (the last
/// chunk may be shorter).
fn chunked_nll_sum<B: Backend>(
    head: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
    hidden: Tensor<B, 3>,
    labels: Tensor<B, 3, Int>,
    weights: Tensor<B, 3>,
    tokens: usize,
) -> Tensor<B, 1> {
    let [batch, len, width] = hidden.dims();
    let total = batch * len;
    let hidden = hidden.reshape([1, total, width]);
    let labels = labels.reshape([1, total, 1]);
    let weights = weights.reshape([1, total, 1]);
    (0..total)
        .step_by(tokens.max(1))
        .map(|start| {
            let rows = start..(start + tokens).min(total);
            nll_sum(
                head(hidden.clone().slice([0..1, rows.clone()])),
                labels.clone().slice([0..1, rows.clone()]),
                weights.clone().slice([0..1, rows]),
            )
        })
        .reduce(Tensor::add)
        .expect("a batch holds at least one token")
}

/// Sum of the negative log-likelihood of `labels` `[B, L, 1]` over the positions where
/// `weights` `[B, L, 1]` is 1 (0 elsewhere); `logits` `[B, L, V]`.
pub fn nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 3, Int>,
    weights: Tensor<B, 3>,
) -> Tensor<B, 1> {
    #[cfg(feature = "cuda")]
    let (logits, labels, weights) = match tigerflow_cuda::nll_sum(logits, labels, weights) {
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

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::TensorData;

    use super::*;
    use crate::backend::CpuBackend;
    use crate::linear::linear;

    type B = Autodiff<CpuBackend>;

    fn values(count: usize, step: f32) -> Vec<f32> {
        (0..count).map(|i| ((i as f32) * step).sin()).collect()
    }

    /// The loss and the hidden states' gradient, the head `[7, 4]` applied `tokens` rows at a
    /// time (all 10 at once when `None`).
    fn loss_and_grad(tokens: Option<usize>) -> (f64, Vec<f32>) {
        let device = Default::default();
        let hidden =
            Tensor::<B, 3>::from_data(TensorData::new(values(40, 0.7), [2, 5, 4]), &device)
                .require_grad();
        let head_weight =
            Tensor::<B, 2>::from_data(TensorData::new(values(28, 1.3), [7, 4]), &device);
        let head = |h: Tensor<B, 3>| linear(h, head_weight.clone());
        let labels = Tensor::<B, 3, Int>::from_data(
            TensorData::new(
                (0..10i64).map(|i| (i * 3) % 7).collect::<Vec<_>>(),
                [2, 5, 1],
            ),
            &device,
        );
        let weights = Tensor::<B, 3>::from_data(
            TensorData::new(
                (0..10).map(|i| f32::from(i % 4 != 1)).collect::<Vec<_>>(),
                [2, 5, 1],
            ),
            &device,
        );
        let loss = match tokens {
            Some(tokens) => chunked_nll_sum(head, hidden.clone(), labels, weights, tokens),
            None => nll_sum(head(hidden.clone()), labels, weights),
        };
        let grads = loss.backward();
        let grad = hidden
            .grad(&grads)
            .expect("the loss depends on the hidden states");
        (loss_value(loss), grad.into_data().to_vec().unwrap())
    }

    #[test]
    fn chunks_keep_the_logits_under_the_allocators_large_pages() {
        // SmolLM2 and Llama-2 micro-batches of 2 × 4096 tokens in bf16: 805 MB and 524 MB whole.
        assert_eq!(chunk_tokens(8192, 49152, 2), 1024);
        assert_eq!(chunk_tokens(8192, 32000, 2), 2048);
        // Small enough to stay whole.
        assert_eq!(chunk_tokens(512, 49152, 4), 512);
    }

    #[test]
    fn the_loss_in_chunks_equals_the_loss_at_once() {
        let (whole, whole_grad) = loss_and_grad(None);
        for tokens in [1, 3, 4, 10, 64] {
            let (chunked, grad) = loss_and_grad(Some(tokens));
            assert!(
                (chunked - whole).abs() < 1e-5,
                "{tokens} tokens a chunk: {chunked} against {whole}"
            );
            let diff = grad
                .iter()
                .zip(&whole_grad)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < 1e-6,
                "{tokens} tokens a chunk: gradient off by {diff}"
            );
        }
    }
}

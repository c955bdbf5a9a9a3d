//! Causal self-attention over packed rows, the one place that chooses how it is computed.
//!
//! The reference is burn's `attention` on a block-diagonal mask: it materialises the
//! `[B, H, L, L]` scores, which on a GPU is where most of a training step's time and memory
//! went (docs/perf-log.md, "Where the time goes"). With the `cuda` feature, bf16 tensors on the CUDA
//! backend take a flash-attention kernel instead (`tigerflow_cuda::flash_attention`), which never
//! holds the scores; every other backend, dtype or shape runs the reference, against which the
//! GPU test set checks the kernel.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

/// `softmax(q·kᵀ / √d) · v` where query `i` sees key `j` iff `j ≤ i` and, with `segments`
/// `[B, L]`, both lie in the same packed sample.
///
/// `q` is `[B, H, L, D]`, `k` and `v` are `[B, KV, L, D]` with `H` a multiple of `KV` (query
/// head `h` reads key/value head `h / (H / KV)`). Segment ids are non-negative and
/// non-decreasing along a row, except padding (`-1`) at its end.
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    segments: Option<Tensor<B, 2, Int>>,
) -> Tensor<B, 4> {
    #[cfg(feature = "cuda")]
    let (q, k, v, segments) = match tigerflow_cuda::flash_attention(q, k, v, segments) {
        Ok(out) => return out,
        Err(inputs) => inputs,
    };
    reference_attention(q, k, v, segments)
}

/// [`causal_attention`] with burn's operations only.
pub fn reference_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    segments: Option<Tensor<B, 2, Int>>,
) -> Tensor<B, 4> {
    let [_, heads, _, _] = q.dims();
    let groups = heads / k.dims()[1];
    let mask = segments.map(|s| {
        let [b, l] = s.dims();
        segment_mask(s).expand([b, heads, l, l])
    });
    let options = AttentionModuleOptions {
        is_causal: true,
        ..Default::default()
    };
    attention(
        q,
        repeat_kv(k, groups),
        repeat_kv(v, groups),
        mask,
        None,
        options,
    )
}

/// The mask that keeps packed samples apart: `[B, 1, L, L]`, true where query and key lie in
/// different segments.
fn segment_mask<B: Backend>(segment_ids: Tensor<B, 2, Int>) -> Tensor<B, 4, Bool> {
    let [b, l] = segment_ids.dims();
    let q = segment_ids
        .clone()
        .reshape([b, 1, l, 1])
        .expand([b, 1, l, l]);
    let k = segment_ids.reshape([b, 1, 1, l]).expand([b, 1, l, l]);
    q.not_equal(k)
}

/// Repeats each key/value head `groups` times so that query head `h` meets kv head
/// `h / groups`, as transformers' `repeat_kv` does.
pub fn repeat_kv<B: Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, groups, t, d])
        .reshape([b, kv * groups, t, d])
}

//! Flash attention for packed rows (causal, grouped-query, segment-aware), forward and backward,
//! on bf16 CUDA tensors. The scores are computed tile by tile and never stored: the forward
//! pass keeps the output and each row's log-sum-exp, the backward pass recomputes the
//! probabilities from them (FlashAttention-2's scheme).
//!
//! `v`, the output and their gradients stay token-major (`[B, L, H, D]` in memory, seen as
//! `[B, H, L, D]` through swapped strides), the layout of the projections before and after
//! attention: splitting `v` into heads and joining the output's heads were a copy each way, in
//! every forward and backward pass. `q` and `k` are head-major, as the rotary kernel writes them.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Int, Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;

use crate::bridge::{
    Cube, CudaTensor, Fused, FusedTensor, Trained, empty, ordinal, primitive, queue, same, tensor,
};
use crate::gpu::Gpu;
use crate::kernels::{DELTA_ROWS_PER_BLOCK, DQ_ELEMENTS_PER_BLOCK, FlashKernels, HEAD_DIMS, TILE};
use crate::source_kernel::{Scalar, launch};

type Inputs<B> = (
    Tensor<B, 4>,
    Tensor<B, 4>,
    Tensor<B, 4>,
    Option<Tensor<B, 2, Int>>,
);

/// [`crate::attention::causal_attention`] by the flash kernels when the tensors are bf16 on
/// the CUDA backend (with or without autodiff) and the shape is one the kernels handle;
/// otherwise the inputs come back untouched.
pub fn flash_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    segments: Option<Tensor<B, 2, Int>>,
) -> Result<Tensor<B, 4>, Inputs<B>> {
    if !supported(&q, &k, segments.as_ref()) {
        return Err((q, k, v, segments));
    }
    let inputs = match same::<Inputs<B>, Inputs<Trained>>((q, k, v, segments)) {
        Ok((q, k, v, s)) => {
            let s = segment_ids(s, &q);
            return Ok(same(tracked(q, k, v, s)).unwrap_or_else(|_| unreachable!("B is Trained")));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B>, Inputs<Fused>>(inputs) {
        Ok((q, k, v, s)) => {
            let s = segment_ids(s, &q).into_primitive();
            let [out, _] = forward(primitive(q), primitive(k), primitive(v), s);
            Ok(same(tensor::<4>(out)).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(inputs) => Err(inputs),
    }
}

/// bf16 values, i32 segment ids, a head dimension the kernels were written for, whole tiles,
/// and a GPU that has them.
fn supported<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    segments: Option<&Tensor<B, 2, Int>>,
) -> bool {
    let [_, heads, len, head_dim] = q.dims();
    let kv_heads = k.dims()[1];
    q.dtype() == DType::BF16
        && k.dtype() == DType::BF16
        && segments.is_none_or(|s| s.dtype() == DType::I32)
        && HEAD_DIMS.contains(&head_dim)
        && len.is_multiple_of(TILE)
        && heads.is_multiple_of(kv_heads)
        && ordinal(&q.device()).is_some_and(|o| Gpu::of(o).flash(head_dim).is_some())
}

/// Segment ids as the kernels read them: all zeros (one sample per row) when there are none.
fn segment_ids<B: Backend>(
    segments: Option<Tensor<B, 2, Int>>,
    q: &Tensor<B, 4>,
) -> Tensor<B, 2, Int> {
    let [batch, _, len, _] = q.dims();
    segments.unwrap_or_else(|| Tensor::zeros([batch, len], &q.device()))
}

/// `[B, H, L, D]` `t` as the contiguous token-major buffer `[B, L, H, D]`; a copy only when `t`
/// is not already a view of one.
fn token_major(t: CudaTensor) -> CudaTensor {
    into_contiguous(Cube::float_swap_dims(t, 1, 2))
}

/// Token-major `[B, L, H, D]` `t` seen as `[B, H, L, D]` (no copy).
fn heads_view(t: CudaTensor) -> CudaTensor {
    Cube::float_swap_dims(t, 1, 2)
}

fn kernels_for(q: &CudaTensor) -> std::sync::Arc<FlashKernels> {
    let head_dim = q.meta.shape()[3];
    Gpu::of(q.device.index)
        .flash(head_dim)
        .expect("checked by `supported`")
}

/// What the backward pass needs: the inputs, the output and its log-sum-exp; as burn's tensors
/// while saved, as buffers (`v` and the output token-major) when the kernels read them.
#[derive(Debug, Clone)]
struct Saved<T> {
    q: T,
    k: T,
    v: T,
    segments: T,
    out: T,
    lse: T,
}

#[derive(Debug)]
struct FlashBackward;

impl Backward<Fused, 3> for FlashBackward {
    type State = Saved<FusedTensor>;

    fn backward(
        self,
        ops: Ops<Saved<FusedTensor>, 3>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let d_out = grads.consume::<Fused>(&ops.node);
        let Saved {
            q,
            k,
            v,
            segments,
            out,
            lse,
        } = ops.state;
        let specs = [
            (q.shape.clone(), DType::BF16),
            (k.shape.clone(), DType::BF16),
            (v.shape.clone(), DType::BF16),
        ];
        let inputs = [q, k, v, segments, out, lse, d_out];
        let grads_of_inputs = queue("flash_attention_backward", inputs, specs, |inputs| {
            let [q, k, v, segments, out, lse, d_out] = inputs;
            let saved = Saved {
                q: into_contiguous(q),
                k: into_contiguous(k),
                v: token_major(v),
                segments: into_contiguous(segments),
                out: token_major(out),
                lse: into_contiguous(lse),
            };
            let (dq, dk, dv) = backward(&kernels_for(&saved.q), &saved, &token_major(d_out));
            [dq, dk, heads_view(dv)]
        });
        for (node, grad) in ops.parents.into_iter().zip(grads_of_inputs) {
            if let Some(node) = node {
                grads.register::<Fused>(node.id, grad);
            }
        }
    }
}

/// The autodiff operation: saves what the backward pass needs when any input is tracked.
fn tracked(
    q: Tensor<Trained, 4>,
    k: Tensor<Trained, 4>,
    v: Tensor<Trained, 4>,
    segments: Tensor<Trained, 2, Int>,
) -> Tensor<Trained, 4> {
    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    let [q, k, v] = [q, k, v].map(|t| t.primitive);
    let segments = segments.into_primitive();
    let [out, lse] = forward(q.clone(), k.clone(), v.clone(), segments.clone());
    let result = match FlashBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                q,
                k,
                v,
                segments,
                out: out.clone(),
                lse,
            };
            prep.finish(saved, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

/// The kernels' `Dims`: batch, heads, kv_heads, len and the softmax scale, from `[B, H, L, D]`
/// queries and `[B, KV, L, D]` keys.
fn dims(q: &CudaTensor, k: &CudaTensor) -> [Scalar; 5] {
    let [batch, heads, len, head_dim] = shape4(q.meta.shape());
    let kv_heads = k.meta.shape()[1];
    [
        Scalar::I32(batch as i32),
        Scalar::I32(heads as i32),
        Scalar::I32(kv_heads as i32),
        Scalar::I32(len as i32),
        Scalar::F32((head_dim as f32).powf(-0.5)),
    ]
}

fn shape4(shape: &Shape) -> [usize; 4] {
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The output `[B, H, L, D]` (bf16, token-major in memory) and each row's log-sum-exp
/// `[B, H, L]` (f32), queued, for `q` `[B, H, L, D]`, `k` and `v` `[B, KV, L, D]` and the
/// segment ids `[B, L]`.
fn forward(
    q: FusedTensor,
    k: FusedTensor,
    v: FusedTensor,
    segments: FusedTensor,
) -> [FusedTensor; 2] {
    let [batch, heads, len, _] = shape4(&q.shape);
    let specs = [
        (q.shape.clone(), DType::BF16),
        ([batch, heads, len].into(), DType::F32),
    ];
    queue("flash_attention", [q, k, v, segments], specs, |inputs| {
        let [q, k, v, segments] = inputs;
        let [q, k, segments] = [q, k, segments].map(into_contiguous);
        let (out, lse) = launch_forward(&kernels_for(&q), &q, &k, &token_major(v), &segments);
        [heads_view(out), lse]
    })
}

/// The token-major output `[B, L, H, D]` (bf16) and each row's log-sum-exp `[B, H, L]` (f32),
/// for head-major `q` `[B, H, L, D]` and `k` `[B, KV, L, D]` and token-major `v` `[B, L, KV, D]`.
fn launch_forward(
    kernels: &FlashKernels,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    segments: &CudaTensor,
) -> (CudaTensor, CudaTensor) {
    let [batch, heads, len, head_dim] = shape4(q.meta.shape());
    let out = empty(q, [batch, len, heads, head_dim], DType::BF16);
    let lse = empty(q, [batch, heads, len], DType::F32);
    let buffers = [q, k, v, segments, &out, &lse];
    assert_vector_aligned(&buffers);
    let grid = ((len / TILE) as u32, (batch * heads) as u32, 1);
    // SAFETY: `flash_fwd` takes these six buffers, contiguous in the layouts above, and the dimensions of `q` and `k`; `supported` checked that `len` is a multiple of `TILE` and `head_dim` is the one compiled, and the buffers are 16-byte aligned (asserted).
    unsafe {
        launch(
            &q.client,
            kernels.forward.clone(),
            grid,
            &buffers,
            &dims(q, k),
        )
    };
    (out, lse)
}

/// (dq, dk, dv) for the token-major output gradient `d_out`; dq and dk head-major, dv
/// token-major.
fn backward(
    kernels: &FlashKernels,
    s: &Saved<CudaTensor>,
    d_out: &CudaTensor,
) -> (CudaTensor, CudaTensor, CudaTensor) {
    let q_shape = s.q.meta.shape().clone();
    let kv_shape = s.k.meta.shape().clone();
    let [batch, heads, len, head_dim] = shape4(s.q.meta.shape());
    let kv_heads = kv_shape[1];
    let rows = batch * heads * len;
    let elements = rows * head_dim;
    let delta = empty(&s.q, [rows], DType::F32);
    let dq_sum = empty(&s.q, q_shape.clone(), DType::F32);
    let dq = empty(&s.q, q_shape, DType::BF16);
    let dk = empty(&s.q, kv_shape, DType::BF16);
    let dv = empty(&s.q, [batch, len, kv_heads, head_dim], DType::BF16);
    let blocks = |n: usize, per: usize| (n.div_ceil(per) as u32, 1, 1);
    let delta_buffers = [&s.out, d_out, &delta, &dq_sum];
    let main_buffers = [
        &s.q,
        &s.k,
        &s.v,
        &s.segments,
        d_out,
        &s.lse,
        &delta,
        &dq_sum,
        &dk,
        &dv,
    ];
    assert_vector_aligned(&main_buffers);
    assert_vector_aligned(&[&s.out, &dq]);
    // In order on burn's stream: delta (zeroing dq_sum), the main pass, dq_sum to bf16.
    let client = &s.q.client;
    // SAFETY: `flash_bwd_delta` takes these four buffers (`rows` rows of `head_dim` each, `delta` `rows` values) and the same dimensions; each block handles `DELTA_ROWS_PER_BLOCK` rows and checks them against `rows`.
    unsafe {
        launch(
            client,
            kernels.delta.clone(),
            blocks(rows, DELTA_ROWS_PER_BLOCK),
            &delta_buffers,
            &dims(&s.q, &s.k),
        )
    };
    let grid = ((len / TILE) as u32, (batch * kv_heads) as u32, 1);
    // SAFETY: `flash_bwd` takes these ten buffers in the layouts above (aligned, asserted) and the dimensions; one block per `TILE` keys of one key-value head, with `len` a multiple of `TILE`.
    unsafe {
        launch(
            client,
            kernels.backward.clone(),
            grid,
            &main_buffers,
            &dims(&s.q, &s.k),
        )
    };
    // SAFETY: `flash_bwd_dq` takes `dq_sum` (f32) and `dq` (bf16), both `elements` values, and checks each index against `elements`.
    unsafe {
        launch(
            client,
            kernels.dq.clone(),
            blocks(elements, DQ_ELEMENTS_PER_BLOCK),
            &[&dq_sum, &dq],
            &[Scalar::I32(elements as i32)],
        )
    };
    (dq, dk, dv)
}

/// The kernels read and write 16-byte vectors. The buffers they get are fresh allocations
/// (RoPE's and the projections' outputs, or contiguous copies), which cubecl aligns to 512
/// bytes, or a projection's output seen through a reshape; a buffer that starts inside another
/// must start on a 16-byte boundary too.
fn assert_vector_aligned(buffers: &[&CudaTensor]) {
    assert!(
        buffers
            .iter()
            .all(|t| t.handle.offset_start.unwrap_or(0) % 16 == 0),
        "flash attention got a buffer that is not 16-byte aligned"
    );
}

//! Flash attention for packed rows (causal, grouped-query, segment-aware), forward and backward,
//! on bf16 CUDA tensors. The scores are computed tile by tile and never stored: the forward
//! pass keeps the output and each row's log-sum-exp, the backward pass recomputes the
//! probabilities from them (FlashAttention-2's scheme).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use cudarc::driver::{LaunchConfig, PushKernelArg, result::memset_d8_async};

use super::bridge::{
    CudaTensor, Fused, Trained, cube_float, cube_int, empty, fused, launch_ordered, ordinal, same,
};
use super::kernels::{
    DELTA_ROWS_PER_BLOCK, DQ_ELEMENTS_PER_BLOCK, FlashKernels, HEAD_DIMS, THREADS, TILE,
    backward_shared_bytes, flash_kernels, forward_shared_bytes, stream,
};
use crate::backend::Backend;

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
            let s = cube_int(segment_ids(s, &q).into_primitive());
            let [q, k, v] = [q, k, v].map(|t| cube_float(t.into_primitive().tensor()));
            let kernels = kernels_for(&q);
            let (out, _) = forward(&kernels, &q, &k, &v, &s);
            let out = Tensor::<Fused, 4>::from_primitive(TensorPrimitive::Float(fused(out)));
            Ok(same(out).unwrap_or_else(|_| unreachable!("B is Fused")))
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
        && ordinal(&q.device()).is_some_and(|o| flash_kernels(o, head_dim).is_some())
}

/// Segment ids as the kernels read them: all zeros (one sample per row) when there are none.
fn segment_ids<B: Backend>(
    segments: Option<Tensor<B, 2, Int>>,
    q: &Tensor<B, 4>,
) -> Tensor<B, 2, Int> {
    let [batch, _, len, _] = q.dims();
    segments.unwrap_or_else(|| Tensor::zeros([batch, len], &q.device()))
}

fn kernels_for(q: &CudaTensor) -> std::sync::Arc<FlashKernels> {
    let head_dim = q.meta.shape()[3];
    flash_kernels(q.device.index, head_dim).expect("checked by `supported`")
}

/// What the backward pass needs: the inputs, the output and its log-sum-exp.
#[derive(Debug, Clone)]
struct Saved {
    q: CudaTensor,
    k: CudaTensor,
    v: CudaTensor,
    segments: CudaTensor,
    out: CudaTensor,
    lse: CudaTensor,
}

#[derive(Debug)]
struct FlashBackward;

impl Backward<Fused, 3> for FlashBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = cube_float(grads.consume::<Fused>(&ops.node));
        let s = ops.state;
        let kernels = kernels_for(&s.q);
        let (dq, dk, dv) = backward(&kernels, &s, &d_out);
        let [q_node, k_node, v_node] = ops.parents;
        for (node, grad) in [(q_node, dq), (k_node, dk), (v_node, dv)] {
            if let Some(node) = node {
                grads.register::<Fused>(node.id, fused(grad));
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
    let segments = cube_int(segments.into_primitive());
    let [cq, ck, cv] = [&q, &k, &v].map(|t| cube_float(t.primitive.clone()));
    let kernels = kernels_for(&cq);
    let (out, lse) = forward(&kernels, &cq, &ck, &cv, &segments);
    let result = match FlashBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                q: cq,
                k: ck,
                v: cv,
                segments,
                out: out.clone(),
                lse,
            };
            prep.finish(saved, fused(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(fused(out)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

/// `[B, H, L, D]`, `[B, KV, L, D]` → (B, H, KV, L).
fn dims(q: &CudaTensor, k: &CudaTensor) -> (i32, i32, i32, i32) {
    let q = q.meta.shape();
    let kv_heads = k.meta.shape()[1];
    (q[0] as i32, q[1] as i32, kv_heads as i32, q[2] as i32)
}

fn scale(q: &CudaTensor) -> f32 {
    (q.meta.shape()[3] as f32).powf(-0.5)
}

/// The output `[B, H, L, D]` (bf16) and each row's log-sum-exp `[B, H, L]` (f32).
fn forward(
    kernels: &FlashKernels,
    q: &CudaTensor,
    k: &CudaTensor,
    v: &CudaTensor,
    segments: &CudaTensor,
) -> (CudaTensor, CudaTensor) {
    let shape = q.meta.shape().clone();
    let (batch, heads, kv_heads, len) = dims(q, k);
    let head_dim = shape[3];
    let out = empty(q, shape.clone(), DType::BF16);
    let lse = empty(q, [shape[0], shape[1], shape[2]], DType::F32);
    let scale = scale(q);
    let config = LaunchConfig {
        grid_dim: ((len as usize / TILE) as u32, (batch * heads) as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: forward_shared_bytes(head_dim),
    };
    let stream = stream(q.device.index);
    launch_ordered(&stream, &[q, k, v, segments, &out, &lse], |addresses| {
        let &[q, k, v, s, o, l] = addresses else {
            unreachable!("six tensors")
        };
        assert_vector_aligned(addresses);
        let mut launch = stream.launch_builder(&kernels.forward);
        launch.arg(&q).arg(&k).arg(&v).arg(&s).arg(&o).arg(&l);
        launch
            .arg(&batch)
            .arg(&heads)
            .arg(&kv_heads)
            .arg(&len)
            .arg(&scale);
        // SAFETY: the arguments match `flash_fwd`'s signature; every buffer is contiguous
        // with the shape the kernel indexes (checked by `supported` and built above).
        unsafe { launch.launch(config) }?;
        Ok(())
    });
    (out, lse)
}

/// (dq, dk, dv) for the output gradient `d_out`.
fn backward(
    kernels: &FlashKernels,
    s: &Saved,
    d_out: &CudaTensor,
) -> (CudaTensor, CudaTensor, CudaTensor) {
    let q_shape = s.q.meta.shape().clone();
    let kv_shape = s.k.meta.shape().clone();
    let (batch, heads, kv_heads, len) = dims(&s.q, &s.k);
    let head_dim = q_shape[3];
    let rows = (batch * heads * len) as usize;
    let elements = rows * head_dim;
    let delta = empty(&s.q, [rows], DType::F32);
    let dq_sum = empty(&s.q, q_shape.clone(), DType::F32);
    let dq = empty(&s.q, q_shape, DType::BF16);
    let dk = empty(&s.q, kv_shape.clone(), DType::BF16);
    let dv = empty(&s.q, kv_shape, DType::BF16);
    let scale = scale(&s.q);
    let (rows, elements_i32) = (rows as i32, elements as i32);
    let blocks = |n: usize, per: usize| n.div_ceil(per) as u32;
    let small = |blocks: u32| LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let main = LaunchConfig {
        grid_dim: ((len as usize / TILE) as u32, (batch * kv_heads) as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: backward_shared_bytes(head_dim),
    };
    let stream = &stream(s.q.device.index);
    let tensors = [
        &s.q,
        &s.k,
        &s.v,
        &s.segments,
        &s.out,
        &s.lse,
        d_out,
        &delta,
        &dq_sum,
        &dq,
        &dk,
        &dv,
    ];
    launch_ordered(stream, &tensors, |addresses| {
        let &[q, k, v, seg, o, lse, d_o, delta, dq_sum, dq, dk, dv] = addresses else {
            unreachable!("twelve tensors")
        };
        assert_vector_aligned(addresses);
        // SAFETY: each launch's arguments match its kernel's signature in
        // flash_attention.cu, on buffers of the sizes allocated above; all run in order on
        // one stream.
        unsafe {
            memset_d8_async(dq_sum, 0, elements * 4, stream.cu_stream())?;
            let mut launch = stream.launch_builder(&kernels.delta);
            launch.arg(&o).arg(&d_o).arg(&delta).arg(&rows);
            launch.launch(small(blocks(rows as usize, DELTA_ROWS_PER_BLOCK)))?;
            let mut launch = stream.launch_builder(&kernels.backward);
            launch.arg(&q).arg(&k).arg(&v).arg(&seg).arg(&d_o).arg(&lse);
            launch.arg(&delta).arg(&dq_sum).arg(&dk).arg(&dv);
            launch
                .arg(&batch)
                .arg(&heads)
                .arg(&kv_heads)
                .arg(&len)
                .arg(&scale);
            launch.launch(main)?;
            let mut launch = stream.launch_builder(&kernels.dq);
            launch.arg(&dq_sum).arg(&dq).arg(&elements_i32);
            launch.launch(small(blocks(elements, DQ_ELEMENTS_PER_BLOCK)))?;
        }
        Ok(())
    });
    (dq, dk, dv)
}

/// The kernels read and write 16-byte vectors. The buffers they get are fresh allocations
/// (RoPE's and the projections' outputs, or contiguous copies), which cubecl aligns.
fn assert_vector_aligned(addresses: &[u64]) {
    assert!(
        addresses.iter().all(|a| a % 16 == 0),
        "flash attention got a buffer that is not 16-byte aligned"
    );
}

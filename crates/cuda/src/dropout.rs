//! Dropout as one kernel each way (`kernels/layer_ops.cu`) on bf16 CUDA tensors. Each element's
//! mask is a hash of a seed and its index, so the backward pass recomputes it from the seed: no
//! mask is drawn by burn's generator (one kernel per adapter input, then a multiply and a
//! division) and none is kept for the backward pass.
//!
//! The seeds come from a stream per thread that [`seed_dropout`] restarts: the trainer seeds it
//! before each layer's forward pass, so a layer run again for gradient checkpointing drops the
//! same elements.

use std::cell::Cell;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;

use crate::bridge::{
    CudaTensor, Fused, FusedTensor, Trained, empty, ordinal, primitive, queue, same, tensor,
};
use crate::gpu::Gpu;
use crate::kernels::{LAYER_THREADS, LayerKernels};
use crate::source_kernel::{Scalar, launch};

/// splitmix64's increment: consecutive seeds of the stream differ by it, and the kernel hashes
/// `seed + index · GOLDEN` (the same constant, `layer_ops.cu`).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// The seed of this thread's next dropout call.
    static NEXT_SEED: Cell<u64> = const { Cell::new(0) };
}

/// Restarts this thread's stream of dropout seeds.
pub fn seed_dropout(seed: u64) {
    NEXT_SEED.set(seed);
}

/// The next seed of this thread's stream. The kernel hashes `seed + t · GOLDEN` for each pair
/// `t` of elements, so two calls would share masks only if their seeds lay fewer than `n / 2`
/// steps of `GOLDEN` apart; the stream's seeds are hashed, which makes that as unlikely as two
/// random 64-bit numbers falling that close.
fn next_seed() -> u64 {
    let seed = NEXT_SEED.get();
    NEXT_SEED.set(seed.wrapping_add(GOLDEN));
    mix64(seed)
}

/// splitmix64's output function (as `mix64` in `layer_ops.cu`).
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `x · mask / keep` by the kernel when `x` is bf16 on the CUDA backend (with or without
/// autodiff); otherwise `x` comes back untouched.
pub fn dropout<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    keep: f64,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !supported(&x) {
        return Err(x);
    }
    let mask = Mask::new(keep, next_seed());
    let x = match same::<Tensor<B, D>, Tensor<Trained, D>>(x) {
        Ok(x) => return Ok(same(tracked(x, mask)).unwrap_or_else(|_| unreachable!("B is Trained"))),
        Err(x) => x,
    };
    match same::<Tensor<B, D>, Tensor<Fused, D>>(x) {
        Ok(x) => {
            let y = tensor::<D>(mask.apply(primitive(x)));
            Ok(same(y).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(x) => Err(x),
    }
}

/// bf16, a count the kernel can index, and a GPU that has the kernel.
fn supported<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.dtype() == DType::BF16
        && x.shape().num_elements() < i32::MAX as usize
        && ordinal(&x.device()).is_some_and(|o| Gpu::of(o).layer().is_some())
}

/// One call's mask: which elements it keeps, and their scale.
#[derive(Debug, Clone, Copy)]
struct Mask {
    seed: u64,
    keep_below: u32,
    scale: f32,
}

impl Mask {
    fn new(keep: f64, seed: u64) -> Self {
        Self {
            seed,
            keep_below: (keep * 2f64.powi(32)).min(f64::from(u32::MAX)) as u32,
            scale: (1.0 / keep) as f32,
        }
    }

    /// `x · mask · scale`, a new tensor of `x`'s shape, queued.
    fn apply(self, x: FusedTensor) -> FusedTensor {
        let spec = (x.shape.clone(), DType::BF16);
        let [y] = queue("dropout", [x], [spec], move |[x]| {
            [self.launch(&into_contiguous(x))]
        });
        y
    }

    /// The kernel on `x`'s buffer, into a new one.
    fn launch(&self, x: &CudaTensor) -> CudaTensor {
        let n = x.meta.shape().num_elements();
        let y = empty(x, x.meta.shape().clone(), DType::BF16);
        let kernels = LayerKernels::of(x);
        // SAFETY: `dropout` takes `x` and `y` (both `n` bf16 values, `y` fresh) and its four scalars; each thread handles two elements and checks them against `n`.
        unsafe {
            launch(
                &x.client,
                kernels.dropout.clone(),
                (n.div_ceil(2 * LAYER_THREADS as usize) as u32, 1, 1),
                &[x, &y],
                &[
                    Scalar::U64(self.seed),
                    Scalar::I32(n as i32),
                    Scalar::U32(self.keep_below),
                    Scalar::F32(self.scale),
                ],
            )
        };
        y
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Fused, 1> for DropoutBackward {
    type State = Mask;

    fn backward(self, ops: Ops<Mask, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<Fused>(&ops.node);
        let [node] = ops.parents;
        if let Some(node) = node {
            grads.register::<Fused>(node.id, ops.state.apply(d_out));
        }
    }
}

/// The autodiff operation: keeps only the mask's seed.
fn tracked<const D: usize>(x: Tensor<Trained, D>, mask: Mask) -> Tensor<Trained, D> {
    let x = x.into_primitive().tensor();
    let nodes = [x.node.clone()];
    let y = mask.apply(x.primitive);
    let result = match DropoutBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(mask, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_stream_repeats_its_seeds_and_its_seeds_differ() {
        seed_dropout(42);
        let first: Vec<u64> = (0..4).map(|_| next_seed()).collect();
        seed_dropout(42);
        let again: Vec<u64> = (0..4).map(|_| next_seed()).collect();
        assert_eq!(first, again);
        let mut distinct = first.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), first.len());
    }

    #[test]
    fn the_mask_keeps_below_keep_times_two_to_the_32() {
        let mask = Mask::new(0.95, 0);
        assert_eq!(mask.keep_below, (0.95 * 4_294_967_296.0) as u32);
        assert_eq!(mask.scale, (1.0 / 0.95) as f32);
    }
}

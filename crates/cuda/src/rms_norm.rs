//! RMSNorm with a frozen weight as one kernel each way (`kernels/layer_ops.cu`), on bf16 CUDA
//! tensors. burn computes it in seven operations forward and about twice as many backward; on
//! SmolLM2-135M each of burn's operations costs host time as well as GPU time (docs/perf-log.md, "The
//! small operations as kernels").
//!
//! The backward pass recomputes each row's scale from the saved input instead of keeping it.

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
use crate::kernels::LayerKernels;
use crate::source_kernel::{Scalar, launch};

type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>);

/// [`crate::model::RmsNorm`]'s `x / rms(x) · weight` over the last dimension by the kernels
/// when both tensors are bf16 on the CUDA backend (with or without autodiff) and the weight is
/// frozen; otherwise the inputs come back untouched.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> Result<Tensor<B, D>, Inputs<B, D>> {
    if !supported(&x, &weight) {
        return Err((x, weight));
    }
    let dims = x.dims();
    let width = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let rows_of = |x: Tensor<B, D>| x.reshape([rows, width]);
    let inputs = match same::<Inputs<B, 2>, Inputs<Trained, 2>>((rows_of(x), weight)) {
        Ok((x, weight)) => {
            let y = same(tracked(x, weight, eps)).unwrap_or_else(|_| unreachable!("B is Trained"));
            return Ok(Tensor::<B, 2>::reshape(y, dims));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B, 2>, Inputs<Fused, 2>>(inputs) {
        Ok((x, weight)) => {
            let y = forward(primitive(x), primitive(weight.unsqueeze::<2>()), eps);
            let y: Tensor<B, 2> =
                same(tensor::<2>(y)).unwrap_or_else(|_| unreachable!("B is Fused"));
            Ok(y.reshape(dims))
        }
        Err((x, weight)) => Err((x.reshape(dims), weight)),
    }
}

/// bf16, a frozen weight, rows the kernels can count, and a GPU that has the kernels.
fn supported<B: Backend, const D: usize>(x: &Tensor<B, D>, weight: &Tensor<B, 1>) -> bool {
    x.dtype() == DType::BF16
        && weight.dtype() == DType::BF16
        && !weight.is_require_grad()
        && x.shape().num_elements() < i32::MAX as usize
        && ordinal(&x.device()).is_some_and(|o| Gpu::of(o).layer().is_some())
}

/// The kernels' `Rows`.
fn rows(x: &CudaTensor, eps: f64) -> [Scalar; 3] {
    let shape = x.meta.shape();
    [
        Scalar::I32(shape[0] as i32),
        Scalar::I32(shape[1] as i32),
        Scalar::F32(eps as f32),
    ]
}

/// `y` for `x` `[rows, width]` and the weight as `[1, width]`, queued.
fn forward(x: FusedTensor, weight: FusedTensor, eps: f64) -> FusedTensor {
    let spec = (x.shape.clone(), DType::BF16);
    let [y] = queue("rms_norm", [x, weight], [spec], move |inputs| {
        let [x, weight] = inputs.map(into_contiguous);
        let y = empty(&x, x.meta.shape().clone(), DType::BF16);
        let grid = (x.meta.shape()[0] as u32, 1, 1);
        // SAFETY: `rms_norm_fwd` takes `x` and `y` (contiguous `[rows, hidden]`) and the `hidden`-long weight, with the row scalars of `rows`; one block per row.
        unsafe {
            launch(
                &x.client,
                LayerKernels::of(&x).rms_norm_fwd.clone(),
                grid,
                &[&x, &weight, &y],
                &rows(&x, eps),
            )
        };
        [y]
    });
    y
}

/// What the backward pass needs: the input, the weight and epsilon.
#[derive(Debug, Clone)]
struct Saved {
    x: FusedTensor,
    weight: FusedTensor,
    eps: f64,
}

#[derive(Debug)]
struct RmsNormBackward;

impl Backward<Fused, 1> for RmsNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Fused>(&ops.node);
        let Saved { x, weight, eps } = ops.state;
        let spec = (x.shape.clone(), DType::BF16);
        let [dx] = queue(
            "rms_norm_backward",
            [x, weight, dy],
            [spec],
            move |inputs| {
                let [x, weight, dy] = inputs.map(into_contiguous);
                let dx = empty(&x, x.meta.shape().clone(), DType::BF16);
                // SAFETY: `rms_norm_bwd` takes `x`, `dy` and `dx` (contiguous `[rows, hidden]`) and the weight, with the same scalars; one block per row.
                unsafe {
                    launch(
                        &x.client,
                        LayerKernels::of(&x).rms_norm_bwd.clone(),
                        (x.meta.shape()[0] as u32, 1, 1),
                        &[&x, &weight, &dy, &dx],
                        &rows(&x, eps),
                    )
                };
                [dx]
            },
        );
        let [x_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<Fused>(node.id, dx);
        }
    }
}

/// The autodiff operation: saves the input and the weight when `x` is tracked.
fn tracked(x: Tensor<Trained, 2>, weight: Tensor<Trained, 1>, eps: f64) -> Tensor<Trained, 2> {
    let x = x.into_primitive().tensor();
    let node = x.node.clone();
    let x = x.primitive;
    let weight = weight.unsqueeze::<2>().into_primitive().tensor().primitive;
    let y = forward(x.clone(), weight.clone(), eps);
    let result = match RmsNormBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { x, weight, eps }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

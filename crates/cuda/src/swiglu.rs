//! SwiGLU, `silu(gate) · up`, as one kernel each way (`kernels/layer_ops.cu`) on bf16 CUDA
//! tensors; the backward kernel gives both gradients in one pass.

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
use crate::source_kernel::{Scalar, SourceKernel, launch};

type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>);

/// `silu(gate) · up` by the kernels when both are bf16 on the CUDA backend (with or without
/// autodiff) and of one shape; otherwise the inputs come back untouched.
pub fn swiglu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Result<Tensor<B, D>, Inputs<B, D>> {
    if !supported(&gate, &up) {
        return Err((gate, up));
    }
    let inputs = match same::<Inputs<B, D>, Inputs<Trained, D>>((gate, up)) {
        Ok((gate, up)) => {
            return Ok(same(tracked(gate, up)).unwrap_or_else(|_| unreachable!("B is Trained")));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B, D>, Inputs<Fused, D>>(inputs) {
        Ok((gate, up)) => {
            let out = tensor::<D>(forward(primitive(gate), primitive(up)));
            Ok(same(out).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(inputs) => Err(inputs),
    }
}

/// bf16, one shape, a count the kernels can index, and a GPU that has the kernels.
fn supported<B: Backend, const D: usize>(gate: &Tensor<B, D>, up: &Tensor<B, D>) -> bool {
    gate.dtype() == DType::BF16
        && up.dtype() == DType::BF16
        && gate.dims() == up.dims()
        && gate.shape().num_elements() < i32::MAX as usize
        && ordinal(&gate.device()).is_some_and(|o| Gpu::of(o).layer().is_some())
}

/// Launches `kernel` with one thread per element of `buffers[0]`.
fn launch_elements(kernel: &SourceKernel, buffers: &[&CudaTensor]) {
    let n = buffers[0].meta.shape().num_elements();
    // SAFETY: the caller passes contiguous buffers of `buffers[0]`'s element count, and the kernel checks each index against `n`.
    unsafe {
        launch(
            &buffers[0].client,
            kernel.clone(),
            (n.div_ceil(LAYER_THREADS as usize) as u32, 1, 1),
            buffers,
            &[Scalar::I32(n as i32)],
        )
    };
}

/// `silu(gate) · up`, queued.
fn forward(gate: FusedTensor, up: FusedTensor) -> FusedTensor {
    let spec = (gate.shape.clone(), DType::BF16);
    let [out] = queue("swiglu", [gate, up], [spec], |inputs| {
        let [gate, up] = inputs.map(into_contiguous);
        let out = empty(&gate, gate.meta.shape().clone(), DType::BF16);
        launch_elements(&LayerKernels::of(&gate).swiglu_fwd, &[&gate, &up, &out]);
        [out]
    });
    out
}

/// What the backward pass needs: both inputs.
#[derive(Debug, Clone)]
struct Saved {
    gate: FusedTensor,
    up: FusedTensor,
}

#[derive(Debug)]
struct SwigluBackward;

impl Backward<Fused, 2> for SwigluBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<Fused>(&ops.node);
        let Saved { gate, up } = ops.state;
        let spec = (gate.shape.clone(), DType::BF16);
        let [d_gate, d_up] = queue(
            "swiglu_backward",
            [gate, up, d_out],
            [spec.clone(), spec],
            |inputs| {
                let [gate, up, d_out] = inputs.map(into_contiguous);
                let shape = gate.meta.shape().clone();
                let d_gate = empty(&gate, shape.clone(), DType::BF16);
                let d_up = empty(&gate, shape, DType::BF16);
                launch_elements(
                    &LayerKernels::of(&gate).swiglu_bwd,
                    &[&gate, &up, &d_out, &d_gate, &d_up],
                );
                [d_gate, d_up]
            },
        );
        let [gate_node, up_node] = ops.parents;
        for (node, grad) in [(gate_node, d_gate), (up_node, d_up)] {
            if let Some(node) = node {
                grads.register::<Fused>(node.id, grad);
            }
        }
    }
}

/// The autodiff operation: saves both inputs when either is tracked.
fn tracked<const D: usize>(gate: Tensor<Trained, D>, up: Tensor<Trained, D>) -> Tensor<Trained, D> {
    let [gate, up] = [gate, up].map(|t| t.into_primitive().tensor());
    let nodes = [gate.node.clone(), up.node.clone()];
    let [gate, up] = [gate, up].map(|t| t.primitive);
    let out = forward(gate.clone(), up.clone());
    let result = match SwigluBackward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { gate, up }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

//! Rotary embeddings fused with the split into heads, one kernel each way
//! (`kernels/layer_ops.cu`), on bf16 CUDA tensors: the projection's output `[B, L, H·D]` becomes
//! the rotated `[B, H, L, D]` that attention reads, where burn needs a transposing copy, two
//! slices, a negation, a concatenation, two products and a sum (and about as many operations
//! backward).

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

type Tables<B> = (Tensor<B, 4>, Tensor<B, 4>);

/// [`crate::rope::Rotary::apply_to_heads`] by the kernels when the tensors are bf16 on the CUDA
/// backend (with or without autodiff) and the tables `[B, 1, L, D]` are constants; otherwise
/// `x` comes back untouched.
pub fn rotary<B: Backend>(
    x: Tensor<B, 3>,
    heads: usize,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> Result<Tensor<B, 4>, Tensor<B, 3>> {
    if !supported(&x, heads, cos, sin) {
        return Err(x);
    }
    let tables = (cos.clone(), sin.clone());
    let x =
        match same::<(Tensor<B, 3>, Tables<B>), (Tensor<Trained, 3>, Tables<Trained>)>((x, tables))
        {
            Ok((x, (cos, sin))) => {
                let [cos, sin] = [cos, sin].map(|t| t.into_primitive().tensor().primitive);
                let y = tracked(x, heads, cos, sin);
                return Ok(same(y).unwrap_or_else(|_| unreachable!("B is Trained")));
            }
            Err((x, _)) => x,
        };
    let tables = (cos.clone(), sin.clone());
    match same::<(Tensor<B, 3>, Tables<B>), (Tensor<Fused, 3>, Tables<Fused>)>((x, tables)) {
        Ok((x, (cos, sin))) => {
            let y = forward(primitive(x), heads, primitive(cos), primitive(sin));
            Ok(same(tensor::<4>(y)).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err((x, _)) => Err(x),
    }
}

/// bf16, an even head dimension, constant tables of the input's batch and length, counts the
/// kernels can index, and a GPU that has the kernels.
fn supported<B: Backend>(
    x: &Tensor<B, 3>,
    heads: usize,
    cos: &Tensor<B, 4>,
    sin: &Tensor<B, 4>,
) -> bool {
    let [batch, len, width] = x.dims();
    let table = |t: &Tensor<B, 4>| {
        t.dtype() == DType::BF16
            && !t.is_require_grad()
            && t.dims() == [batch, 1, len, width / heads]
    };
    x.dtype() == DType::BF16
        && width.is_multiple_of(heads)
        && (width / heads).is_multiple_of(2)
        && table(cos)
        && table(sin)
        && batch * len * width < i32::MAX as usize
        && ordinal(&x.device()).is_some_and(|o| Gpu::of(o).layer().is_some())
}

/// The kernels' `Heads` `[B, L, H, D]`, from the split layout `[B, L, H·D]`.
fn heads_of(x: &FusedTensor, heads: usize) -> [usize; 4] {
    let shape = &x.shape;
    [shape[0], shape[1], heads, shape[2] / heads]
}

/// Launches `kernel` over every rotated pair of a `[batch, len, heads, head_dim]` tensor.
fn launch_pairs(kernel: &SourceKernel, dims: [usize; 4], buffers: &[&CudaTensor]) {
    let [batch, len, heads, head_dim] = dims;
    let pairs = batch * len * heads * head_dim / 2;
    // SAFETY: the caller passes buffers of `dims`' element count (contiguous), and the kernel checks each pair index against the pair count it computes from the same dimensions.
    unsafe {
        launch(
            &buffers[0].client,
            kernel.clone(),
            (pairs.div_ceil(LAYER_THREADS as usize) as u32, 1, 1),
            buffers,
            &dims.map(|d| Scalar::I32(d as i32)),
        )
    };
}

/// The rotated heads `[B, H, L, D]` of `x` `[B, L, H·D]`, queued.
fn forward(x: FusedTensor, heads: usize, cos: FusedTensor, sin: FusedTensor) -> FusedTensor {
    let dims = heads_of(&x, heads);
    let [batch, len, heads, head_dim] = dims;
    let spec = ([batch, heads, len, head_dim].into(), DType::BF16);
    let [y] = queue("rotary", [x, cos, sin], [spec], move |inputs| {
        let [x, cos, sin] = inputs.map(into_contiguous);
        let y = empty(&x, [batch, heads, len, head_dim], DType::BF16);
        launch_pairs(
            &LayerKernels::of(&x).rotary_fwd,
            dims,
            &[&x, &cos, &sin, &y],
        );
        [y]
    });
    y
}

/// What the backward pass needs: the tables and the layout.
#[derive(Debug, Clone)]
struct Saved {
    cos: FusedTensor,
    sin: FusedTensor,
    dims: [usize; 4],
}

#[derive(Debug)]
struct RotaryBackward;

impl Backward<Fused, 1> for RotaryBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Fused>(&ops.node);
        let Saved { cos, sin, dims } = ops.state;
        let [batch, len, heads, head_dim] = dims;
        let spec = ([batch, len, heads * head_dim].into(), DType::BF16);
        let [dx] = queue("rotary_backward", [dy, cos, sin], [spec], move |inputs| {
            let [dy, cos, sin] = inputs.map(into_contiguous);
            let dx = empty(&dy, [batch, len, heads * head_dim], DType::BF16);
            launch_pairs(
                &LayerKernels::of(&dy).rotary_bwd,
                dims,
                &[&dy, &cos, &sin, &dx],
            );
            [dx]
        });
        let [x_node] = ops.parents;
        if let Some(node) = x_node {
            grads.register::<Fused>(node.id, dx);
        }
    }
}

/// The autodiff operation: saves the tables when `x` is tracked.
fn tracked(
    x: Tensor<Trained, 3>,
    heads: usize,
    cos: FusedTensor,
    sin: FusedTensor,
) -> Tensor<Trained, 4> {
    let x = x.into_primitive().tensor();
    let node = x.node.clone();
    let dims = heads_of(&x.primitive, heads);
    let y = forward(x.primitive, heads, cos.clone(), sin.clone());
    let result = match RotaryBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(Saved { cos, sin, dims }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

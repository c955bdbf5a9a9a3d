//! The token-summed cross-entropy as kernels (`kernels/cross_entropy.cu`) on bf16 CUDA logits.
//!
//! burn's `log_softmax` and `gather` hold the log-probabilities, a tensor as large as the logits
//! (805 MB at SmolLM2-135M's 49,152-token vocabulary and 8,192 tokens), and its backward pass
//! more of them. Here the forward pass keeps one log-sum-exp per token and the backward pass
//! writes the logits' gradient in one pass. The loss comes back in f32, summed in a fixed order.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;

use crate::bridge::{
    CudaTensor, Fused, FusedTensor, Trained, empty, ordinal, primitive, queue, same, tensor,
};
use crate::gpu::Gpu;
use crate::kernels::LossKernels;
use crate::source_kernel::{Scalar, launch};

type Inputs<B> = (Tensor<B, 3>, Tensor<B, 3, Int>, Tensor<B, 3>);

/// [`crate::loss::nll_sum`] by the kernels when the logits and weights are bf16 and the labels
/// i32 on the CUDA backend (with or without autodiff); otherwise the inputs come back untouched.
pub fn nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 3, Int>,
    weights: Tensor<B, 3>,
) -> Result<Tensor<B, 1>, Inputs<B>> {
    if !supported(&logits, &labels, &weights) {
        return Err((logits, labels, weights));
    }
    let inputs = match same::<Inputs<B>, Inputs<Trained>>((logits, labels, weights)) {
        Ok((logits, labels, weights)) => {
            let labels = labels.into_primitive();
            let weights = weights.into_primitive().tensor().primitive;
            let loss = tracked(logits, labels, weights);
            return Ok(same(loss).unwrap_or_else(|_| unreachable!("B is Trained")));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B>, Inputs<Fused>>(inputs) {
        Ok((logits, labels, weights)) => {
            let [loss, _] = forward(
                primitive(logits),
                labels.into_primitive(),
                primitive(weights),
            );
            Ok(same(tensor::<1>(loss)).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(inputs) => Err(inputs),
    }
}

/// bf16 logits and weights, i32 labels, one label and weight per token, a row count the kernels
/// can index, and a GPU that has the kernels.
fn supported<B: Backend>(
    logits: &Tensor<B, 3>,
    labels: &Tensor<B, 3, Int>,
    weights: &Tensor<B, 3>,
) -> bool {
    let [batch, len, vocab] = logits.dims();
    logits.dtype() == DType::BF16
        && weights.dtype() == DType::BF16
        && labels.dtype() == DType::I32
        && labels.dims() == [batch, len, 1]
        && weights.dims() == [batch, len, 1]
        && !weights.is_require_grad()
        && batch * len * vocab < i32::MAX as usize
        && ordinal(&logits.device()).is_some_and(|o| Gpu::of(o).loss().is_some())
}

fn kernels_for(t: &CudaTensor) -> &'static LossKernels {
    Gpu::of(t.device.index)
        .loss()
        .expect("checked by `supported`")
}

/// The kernels' `Vocab`: 16-byte vectors when every row starts on a 16-byte boundary.
fn vocab(logits: &CudaTensor) -> [Scalar; 3] {
    let shape = logits.meta.shape();
    let (rows, vocab) = (shape[0] * shape[1], shape[2]);
    let aligned =
        logits.handle.offset_start.unwrap_or(0).is_multiple_of(16) && vocab.is_multiple_of(8);
    [
        Scalar::I32(rows as i32),
        Scalar::I32(vocab as i32),
        Scalar::I32(aligned.into()),
    ]
}

/// The summed loss `[1]` (f32) and each token's log-sum-exp `[rows]` (f32), queued.
fn forward(logits: FusedTensor, labels: FusedTensor, weights: FusedTensor) -> [FusedTensor; 2] {
    let rows = logits.shape[0] * logits.shape[1];
    let specs = [([1].into(), DType::F32), ([rows].into(), DType::F32)];
    queue(
        "cross_entropy",
        [logits, labels, weights],
        specs,
        move |inputs| {
            let [logits, labels, weights] = inputs.map(into_contiguous);
            let lse = empty(&logits, [rows], DType::F32);
            let terms = empty(&logits, [rows], DType::F32);
            let loss = empty(&logits, [1], DType::F32);
            let kernels = kernels_for(&logits);
            let client = &logits.client;
            let dims = vocab(&logits);
            // SAFETY: `ce_fwd` takes these five buffers and the vocabulary size: one block per row of the contiguous `[rows, vocab]` logits, and labels, weights, lse and terms hold `rows` values each.
            unsafe {
                launch(
                    client,
                    kernels.forward.clone(),
                    (rows as u32, 1, 1),
                    &[&logits, &labels, &weights, &lse, &terms],
                    &dims,
                )
            };
            // SAFETY: `ce_sum` takes `terms` (`rows` values) and the one-value `loss`, in one block.
            unsafe {
                launch(
                    client,
                    kernels.sum.clone(),
                    (1, 1, 1),
                    &[&terms, &loss],
                    &dims,
                )
            };
            [loss, lse]
        },
    )
}

/// What the backward pass needs: the logits, labels, weights and each token's log-sum-exp.
#[derive(Debug, Clone)]
struct Saved {
    logits: FusedTensor,
    labels: FusedTensor,
    weights: FusedTensor,
    lse: FusedTensor,
}

#[derive(Debug)]
struct CrossEntropyBackward;

impl Backward<Fused, 1> for CrossEntropyBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_loss = grads.consume::<Fused>(&ops.node);
        assert_eq!(d_loss.dtype, DType::F32, "the loss is computed in f32");
        let s = ops.state;
        let spec = (s.logits.shape.clone(), DType::BF16);
        let inputs = [s.logits, s.labels, s.weights, s.lse, d_loss];
        let [d_logits] = queue("cross_entropy_backward", inputs, [spec], |inputs| {
            let [logits, labels, weights, lse, d_loss] = inputs.map(into_contiguous);
            let d_logits = empty(&logits, logits.meta.shape().clone(), DType::BF16);
            let rows = lse.meta.shape()[0];
            // SAFETY: `ce_bwd` takes these six buffers: one block per row of the contiguous logits (`rows` of them, as many as `lse` holds), and `d_logits` has the logits' shape.
            unsafe {
                launch(
                    &logits.client,
                    kernels_for(&logits).backward.clone(),
                    (rows as u32, 1, 1),
                    &[&logits, &labels, &weights, &lse, &d_loss, &d_logits],
                    &vocab(&logits),
                )
            };
            [d_logits]
        });
        let [logits_node] = ops.parents;
        if let Some(node) = logits_node {
            grads.register::<Fused>(node.id, d_logits);
        }
    }
}

/// The autodiff operation: saves the logits and the log-sum-exps when the logits are tracked.
fn tracked(
    logits: Tensor<Trained, 3>,
    labels: FusedTensor,
    weights: FusedTensor,
) -> Tensor<Trained, 1> {
    let logits = logits.into_primitive().tensor();
    let node = logits.node.clone();
    let logits = logits.primitive;
    let [loss, lse] = forward(logits.clone(), labels.clone(), weights.clone());
    let result = match CrossEntropyBackward
        .prepare::<NoCheckpointing>([node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            Saved {
                logits,
                labels,
                weights,
                lse,
            },
            loss,
        ),
        OpsKind::UnTracked(prep) => prep.finish(loss),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

//! One micro-batch: forward, token-summed cross-entropy, and the gradients of every adapter.
//!
//! The loss of an optimizer step is the mean over all target tokens of all its micro-batches,
//! so each micro-batch contributes `sum(token NLL) / tokens_in_step` and gradients simply add up.
//!
//! With `recompute` (gradient checkpointing) only the input of each decoder layer is kept: the
//! forward runs layer by layer without keeping the graph, the head's backward gives ∂loss/∂h_L,
//! then every layer is run again with its graph and back-propagated alone (a vector-Jacobian
//! product with the gradient coming from above). Dropout masks are re-drawn identically because
//! dropout is re-seeded before every layer (`tigerflow_llm::dropout::seed`), in both passes and
//! in both modes.

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use tigerflow_llm::loss::{head_nll_sum, loss_value};
use tigerflow_llm::model::{DecoderLayer, Keys, Llama};
use tigerflow_llm::rope::Rotary;

use crate::packing::{Batch, IGNORE};
use tigerflow_llm::adapters::layer_adapters;

/// A collated batch on a device.
pub struct BatchTensors<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub position_ids: Tensor<B, 2, Int>,
    pub segment_ids: Tensor<B, 2, Int>,
    /// `[rows, len, 1]`, ignored positions set to 0 (masked out by `weights`).
    pub labels: Tensor<B, 3, Int>,
    /// `[rows, len, 1]`: 1 where the label counts.
    pub weights: Tensor<B, 3>,
}

impl<B: Backend> BatchTensors<B> {
    pub fn new(batch: &Batch, device: &B::Device) -> Self {
        let shape = [batch.rows, batch.len];
        let int =
            |v: &[i64]| Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), shape), device);
        let labels: Vec<i64> = batch
            .labels
            .iter()
            .map(|&l| if l == IGNORE { 0 } else { l })
            .collect();
        let weights: Vec<f32> = batch
            .labels
            .iter()
            .map(|&l| if l == IGNORE { 0.0 } else { 1.0 })
            .collect();
        BatchTensors {
            input_ids: int(&batch.input_ids),
            position_ids: int(&batch.position_ids),
            segment_ids: int(&batch.segment_ids),
            labels: int(&labels).reshape([batch.rows, batch.len, 1]),
            weights: Tensor::from_data(
                TensorData::new(weights, [batch.rows, batch.len, 1]),
                device,
            ),
        }
    }
}

/// The summed NLL of a batch without gradients (evaluation: dropout is off).
pub fn eval_nll_sum<B: Backend>(model: &Llama<B>, batch: &Batch, device: &B::Device) -> f64 {
    let t = BatchTensors::<B>::new(batch, device);
    let normed = model.forward_hidden(t.input_ids, t.position_ids, Some(t.segment_ids));
    loss_value(head_nll_sum(model, normed, t.labels, t.weights))
}

/// The gradients of one adapter: `(lora_A, lora_B)`.
pub type GradPair<I> = (Tensor<I, 2>, Tensor<I, 2>);

/// Gradients of one micro-batch, in the order of [`layer_adapters`] over all layers, each as
/// `(lora_A grad, lora_B grad)`.
pub struct MicroGrads<B: AutodiffBackend> {
    /// Unscaled summed NLL of the micro-batch.
    pub nll_sum: f64,
    pub grads: Vec<GradPair<B::InnerBackend>>,
}

/// The seed of layer `layer`'s dropout masks for the micro-batch seeded `micro_seed`.
fn layer_seed(micro_seed: u64, layer: usize) -> u64 {
    micro_seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

struct Shared<B: Backend> {
    rotary: Rotary<B>,
    segment_ids: Tensor<B, 2, Int>,
}

/// Gradients of `scale · nll_sum(batch)` with respect to every adapter of `model`.
pub fn micro_batch_grads<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    batch: &Batch,
    scale: f64,
    micro_seed: u64,
    recompute: bool,
    device: &B::Device,
) -> MicroGrads<B> {
    let t = BatchTensors::<B>::new(batch, device);
    let shared = Shared {
        rotary: model.rotary(t.position_ids.clone()),
        segment_ids: t.segment_ids.clone(),
    };
    let embedded = model.embed(t.input_ids.clone());
    if recompute {
        grads_recomputed(
            model, targets, &t, &shared, embedded, scale, micro_seed, device,
        )
    } else {
        grads_full(
            model, targets, &t, &shared, embedded, scale, micro_seed, device,
        )
    }
}

/// Decoder layer `l` (`layer`) with its dropout stream seeded for this micro-batch.
fn run_layer<B: Backend>(
    layer: &DecoderLayer<B>,
    l: usize,
    x: Tensor<B, 3>,
    shared: &Shared<B>,
    micro_seed: u64,
    device: &B::Device,
) -> Tensor<B, 3> {
    tigerflow_llm::dropout::seed::<B>(device, layer_seed(micro_seed, l));
    let keys = Keys::Own(Some(shared.segment_ids.clone()));
    layer.forward(x, &shared.rotary, keys)
}

fn collect_layer<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    l: usize,
    grads: &B::Gradients,
    out: &mut Vec<GradPair<B::InnerBackend>>,
) {
    for (_, lora) in layer_adapters(l, &model.layers[l], targets) {
        let a = lora.lora_a.val();
        let b = lora.lora_b.val();
        let ga = a.grad(grads).unwrap_or_else(|| a.inner().zeros_like());
        let gb = b.grad(grads).unwrap_or_else(|| b.inner().zeros_like());
        out.push((ga, gb));
    }
}

#[allow(clippy::too_many_arguments)]
fn grads_full<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    t: &BatchTensors<B>,
    shared: &Shared<B>,
    mut x: Tensor<B, 3>,
    scale: f64,
    micro_seed: u64,
    device: &B::Device,
) -> MicroGrads<B> {
    for l in 0..model.layers.len() {
        x = run_layer(&model.layers[l], l, x, shared, micro_seed, device);
    }
    let nll = head_nll_sum(
        model,
        model.norm.forward(x),
        t.labels.clone(),
        t.weights.clone(),
    );
    let nll_value = loss_value(nll.clone());
    let grads = nll.mul_scalar(scale).backward();
    let mut out = Vec::new();
    for l in 0..model.layers.len() {
        collect_layer(model, targets, l, &grads, &mut out);
    }
    MicroGrads {
        nll_sum: nll_value,
        grads: out,
    }
}

#[allow(clippy::too_many_arguments)]
fn grads_recomputed<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    t: &BatchTensors<B>,
    shared: &Shared<B>,
    embedded: Tensor<B, 3>,
    scale: f64,
    micro_seed: u64,
    device: &B::Device,
) -> MicroGrads<B> {
    let n = model.layers.len();
    // Layer inputs only. The first pass runs each layer with its adapters frozen, so that nothing
    // is recorded: with trainable adapters every layer recorded its attention scores and
    // activations, and burn frees a detached graph only at the next backward pass, so the graphs
    // of all layers were alive at once (57 GiB in a 7B step of 2048 tokens, 9 GiB without).
    // Frozen parameters keep autodiff on, so dropout draws the same masks in both passes.
    let mut inputs = vec![embedded.detach()];
    for l in 0..n {
        let frozen = model.layers[l].clone().no_grad();
        let y = run_layer(&frozen, l, inputs[l].clone(), shared, micro_seed, device);
        inputs.push(y);
    }
    let top = inputs[n].clone().require_grad();
    let nll = head_nll_sum(
        model,
        model.norm.forward(top.clone()),
        t.labels.clone(),
        t.weights.clone(),
    );
    let nll_value = loss_value(nll.clone());
    let grads = nll.mul_scalar(scale).backward();
    let mut upstream = top
        .grad(&grads)
        .expect("the head depends on the last hidden state");
    let mut per_layer = Vec::with_capacity(n);
    for l in (0..n).rev() {
        let x = inputs[l].clone().require_grad();
        let y = run_layer(&model.layers[l], l, x.clone(), shared, micro_seed, device);
        let grads = y.mul(Tensor::from_inner(upstream.clone())).sum().backward();
        let mut layer = Vec::new();
        collect_layer(model, targets, l, &grads, &mut layer);
        per_layer.push(layer);
        if l > 0 {
            upstream = x
                .grad(&grads)
                .expect("a layer's output depends on its input");
        }
    }
    per_layer.reverse();
    MicroGrads {
        nll_sum: nll_value,
        grads: per_layer.into_iter().flatten().collect(),
    }
}

/// The model without autodiff, for evaluation.
pub fn inference_model<B: AutodiffBackend>(model: &Llama<B>) -> Llama<B::InnerBackend> {
    model.valid()
}

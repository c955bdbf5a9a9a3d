//! Which projections carry adapters, under their PEFT module paths
//! (`model.layers.{i}.self_attn.q_proj`), and moving adapters in and out of a model.

use std::collections::BTreeMap;

use crate::linear::Projection;
use crate::lora::{LoraAdapter, LoraConfig};
use crate::model::{DecoderLayer, Llama};
use crate::peft::{AdapterConfig, AdapterTensors, PeftAdapter};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// The seven Llama projections as (module group, name), in HF order.
const SLOTS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

fn slot<'a, B: Backend>(layer: &'a DecoderLayer<B>, name: &str) -> &'a Projection<B> {
    match name {
        "q_proj" => &layer.self_attn.q_proj,
        "k_proj" => &layer.self_attn.k_proj,
        "v_proj" => &layer.self_attn.v_proj,
        "o_proj" => &layer.self_attn.o_proj,
        "gate_proj" => &layer.mlp.gate_proj,
        "up_proj" => &layer.mlp.up_proj,
        _ => &layer.mlp.down_proj,
    }
}

fn slot_mut<'a, B: Backend>(layer: &'a mut DecoderLayer<B>, name: &str) -> &'a mut Projection<B> {
    match name {
        "q_proj" => &mut layer.self_attn.q_proj,
        "k_proj" => &mut layer.self_attn.k_proj,
        "v_proj" => &mut layer.self_attn.v_proj,
        "o_proj" => &mut layer.self_attn.o_proj,
        "gate_proj" => &mut layer.mlp.gate_proj,
        "up_proj" => &mut layer.mlp.up_proj,
        _ => &mut layer.mlp.down_proj,
    }
}

fn targeted<'t>(targets: &'t [String]) -> impl Iterator<Item = (&'static str, &'static str)> + 't {
    SLOTS
        .into_iter()
        .filter(|(_, name)| targets.iter().any(|t| t == name))
}

/// The adapters of decoder layer `i` as (PEFT module path, adapter), in a fixed order.
pub fn layer_adapters<'a, B: Backend>(
    i: usize,
    layer: &'a DecoderLayer<B>,
    targets: &[String],
) -> Vec<(String, &'a LoraAdapter<B>)> {
    targeted(targets)
        .filter_map(|(group, name)| {
            let lora = slot(layer, name).lora.as_ref()?;
            Some((format!("model.layers.{i}.{group}.{name}"), lora))
        })
        .collect()
}

/// Calls `f` with (PEFT module path, projection) for every target projection of `model`, in a
/// fixed order.
pub fn for_each_target_mut<B: Backend>(
    model: &mut Llama<B>,
    targets: &[String],
    mut f: impl FnMut(String, &mut Projection<B>),
) {
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for (group, name) in targeted(targets) {
            f(
                format!("model.layers.{i}.{group}.{name}"),
                slot_mut(layer, name),
            );
        }
    }
}

/// Gives every target projection a fresh PEFT-initialised adapter; `unit_uniform` drives the
/// kaiming-uniform init of `lora_A` in module order.
pub fn attach_fresh<B: Backend>(
    model: &mut Llama<B>,
    targets: &[String],
    config: &LoraConfig,
    mut unit_uniform: impl FnMut() -> f32,
    device: &B::Device,
) {
    for_each_target_mut(model, targets, |_, projection| {
        let (out, inp) = projection.shape();
        projection.lora = Some(LoraAdapter::init(
            config,
            inp,
            out,
            &mut unit_uniform,
            device,
        ));
    });
}

/// Installs the adapters of a PEFT directory; every target projection must have one.
pub fn attach_peft<B: Backend>(
    model: &mut Llama<B>,
    adapter: &PeftAdapter,
    device: &B::Device,
) -> Result<(), String> {
    let config = LoraConfig {
        r: adapter.config.r,
        alpha: adapter.config.lora_alpha,
        dropout: adapter.config.lora_dropout,
    };
    let mut found = 0;
    let mut problem = None;
    for_each_target_mut(model, &adapter.config.target_modules, |path, projection| {
        if problem.is_some() {
            return;
        }
        let Some(t) = adapter.modules.get(&path) else {
            problem = Some(format!("the adapter has no weights for {path}"));
            return;
        };
        let (out, inp) = projection.shape();
        if (t.in_features, t.out_features) != (inp, out) {
            problem = Some(format!(
                "{path}: adapter is {}→{}, the model's projection is {inp}→{out}; fix: use the adapter with the base model it was trained on",
                t.in_features, t.out_features
            ));
            return;
        }
        let a = Tensor::from_data(TensorData::new(t.a.clone(), [t.r, t.in_features]), device);
        let b = Tensor::from_data(TensorData::new(t.b.clone(), [t.out_features, t.r]), device);
        projection.lora = Some(LoraAdapter::from_tensors(&config, a, b));
        found += 1;
    });
    if let Some(problem) = problem {
        return Err(problem);
    }
    if found != adapter.modules.len() {
        return Err(format!(
            "the adapter has weights for {} modules but only {found} match target_modules {:?}",
            adapter.modules.len(),
            adapter.config.target_modules
        ));
    }
    Ok(())
}

fn to_vec<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 tensor data")
}

/// The model's adapters as a PEFT adapter.
pub fn export<B: Backend>(
    model: &Llama<B>,
    targets: &[String],
    config: AdapterConfig,
) -> PeftAdapter {
    let mut modules = BTreeMap::new();
    let adapters = model
        .layers
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer_adapters(i, layer, targets));
    for (path, lora) in adapters {
        let (r, in_features, out_features) = lora.dims();
        modules.insert(
            path,
            AdapterTensors {
                a: to_vec(lora.lora_a.val()),
                b: to_vec(lora.lora_b.val()),
                r,
                in_features,
                out_features,
            },
        );
    }
    PeftAdapter { config, modules }
}

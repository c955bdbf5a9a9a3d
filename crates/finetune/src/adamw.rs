//! AdamW with torch's exact update, on the LoRA weights only.
//!
//! burn's `AdamWConfig` defaults differ from torch (ε 1e-5, weight decay 1e-4) and its state is
//! awkward to checkpoint next to a PEFT adapter, so the few lines of the update live here. They
//! run on one vector holding every adapter tensor (`flat.rs`); checkpoints keep the moments
//! per tensor, keyed by the adapter tensor's PEFT name.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

use crate::flat::FlatLayout;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

/// First and second moments of one tensor (rank 1: the flat vector; rank 2: one adapter tensor,
/// as checkpoints store them).
#[derive(Debug, Clone)]
pub struct Moments<B: Backend, const D: usize> {
    pub exp_avg: Tensor<B, D>,
    pub exp_avg_sq: Tensor<B, D>,
}

/// AdamW over the flat vector of every adapter tensor (see `flat.rs`).
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Optimizer steps taken so far (torch's `state["step"]`).
    pub steps: usize,
    /// `None` until the first step.
    pub moments: Option<Moments<B, 1>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            steps: 0,
            moments: None,
        }
    }

    /// Takes one step: the updated `param` for gradient `grad` at learning rate `lr`, element by
    /// element as `torch.optim.AdamW` (single-tensor path) computes it.
    pub fn step(&mut self, param: Tensor<B, 1>, grad: Tensor<B, 1>, lr: f64) -> Tensor<B, 1> {
        let c = self.config;
        self.steps += 1;
        let state = self.moments.get_or_insert_with(|| Moments {
            exp_avg: grad.zeros_like(),
            exp_avg_sq: grad.zeros_like(),
        });
        let param = param.mul_scalar(1.0 - lr * c.weight_decay);
        // exp_avg.lerp_(grad, 1 - beta1)
        state.exp_avg = state.exp_avg.clone()
            + (grad.clone() - state.exp_avg.clone()).mul_scalar(1.0 - c.beta1);
        state.exp_avg_sq = state.exp_avg_sq.clone().mul_scalar(c.beta2)
            + (grad.clone() * grad).mul_scalar(1.0 - c.beta2);
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias_correction1;
        let denom = state
            .exp_avg_sq
            .clone()
            .sqrt()
            .div_scalar(bias_correction2_sqrt)
            .add_scalar(c.epsilon);
        param - (state.exp_avg.clone() / denom).mul_scalar(step_size)
    }

    /// The moments of each tensor of `layout`, by name (empty before the first step).
    pub fn named_moments(&self, layout: &FlatLayout) -> BTreeMap<String, Moments<B, 2>> {
        let Some(m) = &self.moments else {
            return BTreeMap::new();
        };
        layout
            .entries()
            .iter()
            .zip(layout.split(m.exp_avg.clone()))
            .zip(layout.split(m.exp_avg_sq.clone()))
            .map(|(((name, _), exp_avg), exp_avg_sq)| {
                (
                    name.clone(),
                    Moments {
                        exp_avg,
                        exp_avg_sq,
                    },
                )
            })
            .collect()
    }

    /// Takes the moments of a checkpoint, which must hold every tensor of `layout` in its shape.
    pub fn restore(
        &mut self,
        layout: &FlatLayout,
        mut named: BTreeMap<String, Moments<B, 2>>,
        steps: usize,
    ) -> Result<(), String> {
        let mut exp_avg = Vec::new();
        let mut exp_avg_sq = Vec::new();
        for (name, shape) in layout.entries() {
            let m = named
                .remove(name)
                .ok_or_else(|| format!("the optimizer state has no moments for {name}"))?;
            if m.exp_avg.dims() != *shape || m.exp_avg_sq.dims() != *shape {
                return Err(format!(
                    "the optimizer moments of {name} are {:?}, the adapter is {shape:?}",
                    m.exp_avg.dims()
                ));
            }
            exp_avg.push(m.exp_avg);
            exp_avg_sq.push(m.exp_avg_sq);
        }
        if let Some(name) = named.keys().next() {
            return Err(format!(
                "the optimizer state has moments for {name}, which the adapter lacks"
            ));
        }
        self.moments = Some(Moments {
            exp_avg: layout.flatten(exp_avg),
            exp_avg_sq: layout.flatten(exp_avg_sq),
        });
        self.steps = steps;
        Ok(())
    }
}

/// Scales `grad` so that its L2 norm is at most `max_norm`, as `torch.nn.utils.clip_grad_norm_`
/// does over all parameters (coefficient `max_norm / (norm + 1e-6)`, capped at 1). Returns the
/// clipped gradient and the norm before clipping (one read-back). `max_norm = 0` only measures.
pub fn clip_global_norm<B: Backend>(grad: Tensor<B, 1>, max_norm: f64) -> (Tensor<B, 1>, f64) {
    let norm = (grad.clone() * grad.clone())
        .sum()
        .into_scalar()
        .elem::<f64>()
        .sqrt();
    if max_norm > 0.0 {
        let coefficient = (max_norm / (norm + 1e-6)).min(1.0);
        (grad.mul_scalar(coefficient), norm)
    } else {
        (grad, norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    type B = tigerflow_llm::backend::CpuBackend;

    fn layout(first: &str, shape: [usize; 2]) -> FlatLayout {
        FlatLayout::new(vec![(first.into(), shape), ("x.lora_B".into(), [2, 1])])
    }

    /// An optimizer one step into a 5-element vector (the size of `layout`'s tensors).
    fn stepped() -> AdamW<B> {
        let device = Default::default();
        let mut adamw = AdamW::new(AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.01,
        });
        let values =
            |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device);
        let _ = adamw.step(
            values(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            values(&[0.5, -1.0, 0.25, 2.0, -3.0]),
            1e-3,
        );
        adamw
    }

    #[test]
    fn moments_survive_a_checkpoint_by_name() {
        let layout = layout("x.lora_A", [1, 3]);
        let adamw = stepped();
        let named = adamw.named_moments(&layout);
        assert_eq!(named["x.lora_B"].exp_avg.dims(), [2, 1]);
        let mut restored = AdamW::<B>::new(adamw.config);
        restored.restore(&layout, named, 1).unwrap();
        assert_eq!(restored.steps, 1);
        let (a, b) = (adamw.moments.unwrap(), restored.moments.unwrap());
        assert_eq!(a.exp_avg.to_data(), b.exp_avg.to_data());
        assert_eq!(a.exp_avg_sq.to_data(), b.exp_avg_sq.to_data());
    }

    #[test]
    fn a_checkpoint_for_other_adapters_is_refused() {
        let named = stepped().named_moments(&layout("x.lora_A", [1, 3]));
        let mut fresh = AdamW::<B>::new(stepped().config);
        let err = fresh
            .restore(&layout("y.lora_A", [1, 3]), named.clone(), 1)
            .unwrap_err();
        assert_eq!(err, "the optimizer state has no moments for y.lora_A");
        let err = fresh
            .restore(&layout("x.lora_A", [3, 1]), named, 1)
            .unwrap_err();
        assert_eq!(
            err,
            "the optimizer moments of x.lora_A are [1, 3], the adapter is [3, 1]"
        );
        assert!(
            fresh.moments.is_none(),
            "a refused checkpoint changes nothing"
        );
    }
}

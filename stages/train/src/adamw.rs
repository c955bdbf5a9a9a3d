//! AdamW with torch's exact update, on the LoRA weights only.
//!
//! burn's `AdamWConfig` defaults differ from torch (ε 1e-5, weight decay 1e-4) and its state is
//! awkward to checkpoint next to a PEFT adapter, so the few lines of the update live here, with
//! moments keyed by the adapter tensor's PEFT name.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

/// First and second moments of one tensor.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 2>,
    pub exp_avg_sq: Tensor<B, 2>,
}

#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    /// Optimizer steps taken so far (torch's `state["step"]`).
    pub steps: usize,
    pub moments: BTreeMap<String, Moments<B>>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            steps: 0,
            moments: BTreeMap::new(),
        }
    }

    /// Starts a step: every [`AdamW::update`] until the next call uses this step's bias correction.
    pub fn begin_step(&mut self) {
        self.steps += 1;
    }

    /// The updated value of `param` for gradient `grad` at learning rate `lr`, as
    /// `torch.optim.AdamW` (single-tensor path) computes it.
    pub fn update(
        &mut self,
        name: &str,
        param: Tensor<B, 2>,
        grad: Tensor<B, 2>,
        lr: f64,
    ) -> Tensor<B, 2> {
        let c = self.config;
        let state = self
            .moments
            .entry(name.to_owned())
            .or_insert_with(|| Moments {
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
}

/// Scales `grads` in place so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does (coefficient `max_norm / (norm + 1e-6)`, capped at 1).
/// Returns the norm before clipping. `max_norm = 0` only measures.
pub fn clip_global_norm<B: Backend>(grads: &mut [Tensor<B, 2>], max_norm: f64) -> f64 {
    if grads.is_empty() {
        return 0.0;
    }
    // One read-back for all tensors: on a GPU each read is a sync, and a 7B model has 448.
    let per_tensor: Vec<Tensor<B, 1>> = grads
        .iter()
        .map(|g| (g.clone() * g.clone()).sum())
        .collect();
    let squares = Tensor::cat(per_tensor, 0).sum().into_scalar().elem::<f64>();
    let norm = squares.sqrt();
    if max_norm > 0.0 {
        let coefficient = (max_norm / (norm + 1e-6)).min(1.0);
        for g in grads.iter_mut() {
            *g = g.clone().mul_scalar(coefficient);
        }
    }
    norm
}

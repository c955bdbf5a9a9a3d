//! LoRA adapters in PEFT's layout and semantics.
//!
//! `lora_A` is `[r, in]`, `lora_B` is `[out, r]` (the weights of PEFT's two `nn.Linear`s), the
//! update is `lora_B(lora_A(dropout(x))) · alpha / r`, A starts kaiming-uniform with a = √5 and B
//! at zero, so a fresh adapter leaves the base model unchanged. Keeping PEFT's layout makes the
//! exported `adapter_model.safetensors` a plain copy of these two tensors.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::dropout::dropout;
use crate::linear::linear;

/// The Llama projections PEFT calls "all linear" (`lora_target_linear = true`), in HF order.
pub const ALL_LINEAR: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// What every adapter of a model shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
}

impl LoraConfig {
    /// PEFT's `scaling = lora_alpha / r` (no rsLoRA).
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// One adapter's share of a projection, ready to compute: `Δy = input · Aᵀ · Bᵀ · scale`.
pub struct LoraTerm<B: Backend> {
    /// `dropout(x)`, `[rows, in]`.
    pub input: Tensor<B, 2>,
    /// `lora_A`, `[r, in]`.
    pub a: Tensor<B, 2>,
    /// `lora_B`, `[out, r]`.
    pub b: Tensor<B, 2>,
    pub scale: f64,
}

impl<B: Backend> LoraTerm<B> {
    /// `Δy` `[rows, out]` with burn's matmul.
    pub fn reference(self) -> Tensor<B, 2> {
        linear(linear(self.input, self.a), self.b).mul_scalar(self.scale)
    }
}

/// One adapter: `Δy = B · A · dropout(x) · scale`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[r, in]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// `[out, r]`.
    pub lora_b: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub scale: f64,
    #[module(skip)]
    pub dropout: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter as PEFT initialises it. `unit_uniform` yields samples of U[0, 1); the
    /// caller owns the random stream so that runs are reproducible from one seed.
    pub fn init(
        config: &LoraConfig,
        in_features: usize,
        out_features: usize,
        mut unit_uniform: impl FnMut() -> f32,
        device: &B::Device,
    ) -> Self {
        // kaiming_uniform_(a=√5) on a [r, in] weight: gain √(2/(1+a²)) = √(1/3), so the bound
        // √3 · gain / √fan_in is 1/√in.
        let bound = 1.0 / (in_features as f32).sqrt();
        let a: Vec<f32> = (0..config.r * in_features)
            .map(|_| (2.0 * unit_uniform() - 1.0) * bound)
            .collect();
        let a = Tensor::from_data(TensorData::new(a, [config.r, in_features]), device);
        let b = Tensor::zeros([out_features, config.r], device);
        Self::from_tensors(config, a, b)
    }

    /// An adapter from existing `lora_A` `[r, in]` and `lora_B` `[out, r]` weights (trainable).
    pub fn from_tensors(config: &LoraConfig, lora_a: Tensor<B, 2>, lora_b: Tensor<B, 2>) -> Self {
        Self {
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            scale: config.scale(),
            dropout: config.dropout,
        }
    }

    /// The adapter's operands for `x` `[rows, in]`. Dropout is active only while gradients are
    /// tracked (training), as in PEFT's `model.train()`.
    pub fn term(&self, x: Tensor<B, 2>) -> LoraTerm<B> {
        let input = if self.dropout > 0.0 && B::ad_enabled(&x.device()) {
            dropout(x, self.dropout)
        } else {
            x
        };
        LoraTerm {
            input,
            a: self.lora_a.val(),
            b: self.lora_b.val(),
            scale: self.scale,
        }
    }

    /// `(r, in, out)`.
    pub fn dims(&self) -> (usize, usize, usize) {
        let [r, inp] = self.lora_a.val().dims();
        let [out, _] = self.lora_b.val().dims();
        (r, inp, out)
    }
}

//! The bias-free linear layer used for every Llama projection.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::lora::LoraAdapter;
use crate::nf4::Nf4Weight;

/// A bias-free linear map whose weight keeps the Hugging Face layout `[out, in]`, so weights and
/// adapters map 1:1 to transformers and PEFT tensors; `forward` computes `x · Wᵀ`.
///
/// The frozen base is either the dense `weight` or, for QLoRA, an NF4 weight dequantized at
/// every use (then `weight` is an empty placeholder). An optional LoRA adapter adds its update.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub nf4: Option<Nf4Weight<B>>,
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Projection<B> {
    /// Wraps a dense `[out, in]` weight as a frozen parameter.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            nf4: None,
            lora: None,
        }
    }

    /// A projection whose frozen base is stored in NF4.
    pub fn quantized(weight: Nf4Weight<B>) -> Self {
        let placeholder = Tensor::zeros([0, 0], &weight.device());
        Self {
            weight: Param::from_tensor(placeholder).set_require_grad(false),
            nf4: Some(weight),
            lora: None,
        }
    }

    /// `[.., in] → [.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let base = match &self.nf4 {
            Some(q) => q.dequantize(),
            None => self.weight.val(),
        };
        let y = x.clone().matmul(base.transpose().unsqueeze::<D>());
        match &self.lora {
            Some(lora) => y + lora.forward(x),
            None => y,
        }
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        let [out, inp] = match &self.nf4 {
            Some(q) => q.shape(),
            None => self.weight.val().dims(),
        };
        (out, inp)
    }
}

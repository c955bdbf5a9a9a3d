//! The bias-free linear layer used for every Llama projection.

use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::lora::{LoraAdapter, LoraTerm};
use crate::nf4::Nf4Weight;

/// `x` `[.., in]` times `weightᵀ` (`weight` is `[out, in]`) → `[.., out]`.
///
/// The leading dimensions are folded into one so that the product is a single 2-D matmul with
/// a transposed (strided) right operand. Broadcasting `weight.transpose()` to `x`'s rank
/// instead makes burn-flex copy the transposed weight into a contiguous tensor on every call:
/// 75 % of generation time on SmolLM2-135M went there (perf).
pub fn linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>) -> Tensor<B, D> {
    let dims = x.dims();
    let inner = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let [out, _] = weight.dims();
    let mut out_dims = dims;
    out_dims[D - 1] = out;
    x.reshape([rows, inner])
        .matmul(weight.transpose())
        .reshape(out_dims)
}

/// `x · Wᵀ` plus the LoRA term when there is one, for `x` `[rows, in]` and `weight` `[out, in]`.
///
/// With the `cuda` feature, bf16 tensors on the CUDA backend take one custom operation that runs
/// every product through cuBLAS (`cuda_ops::lora_linear`); elsewhere burn's matmul computes it,
/// which is the reference the GPU test set checks the operation against.
pub fn adapted_linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    lora: Option<LoraTerm<B>>,
) -> Tensor<B, 2> {
    #[cfg(feature = "cuda")]
    let (x, weight, lora) = match crate::cuda_ops::lora_linear(x, weight, lora) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    let y = linear(x, weight);
    match lora {
        Some(term) => y + term.reference(),
        None => y,
    }
}

/// The frozen weight of a projection: dense, or NF4 (QLoRA) dequantized at every use.
#[derive(Module, Debug)]
pub enum BaseWeight<B: Backend> {
    Dense(Param<Tensor<B, 2>>),
    Nf4(Nf4Weight<B>),
}

/// A bias-free linear map whose weight keeps the Hugging Face layout `[out, in]`, so weights and
/// adapters map 1:1 to transformers and PEFT tensors; `forward` computes `x · Wᵀ`. An optional
/// LoRA adapter adds its update.
#[derive(Module, Debug)]
pub struct Projection<B: Backend> {
    pub base: BaseWeight<B>,
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Projection<B> {
    /// Wraps a dense `[out, in]` weight as a frozen parameter.
    pub fn new(weight: Tensor<B, 2>) -> Self {
        Self {
            base: BaseWeight::Dense(Param::from_tensor(weight).set_require_grad(false)),
            lora: None,
        }
    }

    /// A projection whose frozen base is stored in NF4.
    pub fn quantized(weight: Nf4Weight<B>) -> Self {
        Self {
            base: BaseWeight::Nf4(weight),
            lora: None,
        }
    }

    /// `[.., in] → [.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let base = match &self.base {
            BaseWeight::Dense(w) => w.val(),
            BaseWeight::Nf4(q) => q.dequantize(),
        };
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let x = x.reshape([rows, dims[D - 1]]);
        let lora = self.lora.as_ref().map(|lora| lora.term(x.clone()));
        let mut out_dims = dims;
        out_dims[D - 1] = base.dims()[0];
        adapted_linear(x, base, lora).reshape(out_dims)
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        let [out, inp] = match &self.base {
            BaseWeight::Dense(w) => w.val().dims(),
            BaseWeight::Nf4(q) => q.shape(),
        };
        (out, inp)
    }
}

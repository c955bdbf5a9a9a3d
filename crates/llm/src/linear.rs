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

/// What one projection computes with: its frozen weight and, with an adapter, the adapter's term.
pub struct Operands<B: Backend> {
    pub base: BaseWeight<B>,
    pub lora: Option<LoraTerm<B>>,
}

/// `x · Wᵀ` plus the LoRA term, for each of `projections` reading the same `x` `[rows, in]`.
///
/// With the `cuda` feature, large enough bf16 products on the CUDA backend take one custom
/// operation that dequantizes NF4 weights and runs every product through cuBLAS
/// (`tigerflow_cuda::lora_linears`); elsewhere burn computes them, which is the reference the GPU
/// test set checks the operation against.
pub fn adapted_linears<B: Backend>(
    x: Tensor<B, 2>,
    projections: Vec<Operands<B>>,
) -> Vec<Tensor<B, 2>> {
    #[cfg(feature = "cuda")]
    let (x, projections) =
        match tigerflow_cuda::lora_linears(x, projections.into_iter().map(to_cuda).collect()) {
            Ok(ys) => return ys,
            Err((x, projections)) => (
                x,
                projections.into_iter().map(from_cuda).collect::<Vec<_>>(),
            ),
        };
    projections
        .into_iter()
        .map(|p| {
            let y = linear(x.clone(), p.base.dense());
            match p.lora {
                Some(term) => y + term.reference(),
                None => y,
            }
        })
        .collect()
}

/// The operands as the CUDA operation takes them (the same tensors, moved).
#[cfg(feature = "cuda")]
fn to_cuda<B: Backend>(p: Operands<B>) -> tigerflow_cuda::Projection<B> {
    use tigerflow_cuda::{FrozenWeight, LoraOperands};
    tigerflow_cuda::Projection {
        base: match p.base {
            BaseWeight::Dense(w) => FrozenWeight::Dense(w.val()),
            BaseWeight::Nf4(q) => FrozenWeight::Nf4 {
                words: q.words,
                absmax: q.absmax,
                code: q.code,
                shape: q.shape,
                blocksize: q.blocksize,
            },
        },
        lora: p.lora.map(|term| LoraOperands {
            input: term.input,
            a: term.a,
            b: term.b,
            scale: term.scale,
        }),
    }
}

/// The operands back from a CUDA operation that did not serve them.
#[cfg(feature = "cuda")]
fn from_cuda<B: Backend>(p: tigerflow_cuda::Projection<B>) -> Operands<B> {
    use tigerflow_cuda::FrozenWeight;
    Operands {
        base: match p.base {
            // The tensor as it came (frozen, untracked): `Param::from_tensor` would track it.
            FrozenWeight::Dense(w) => {
                BaseWeight::Dense(Param::initialized(burn::module::ParamId::new(), w))
            }
            FrozenWeight::Nf4 {
                words,
                absmax,
                code,
                shape,
                blocksize,
            } => BaseWeight::Nf4(Nf4Weight {
                shape,
                blocksize,
                words,
                absmax,
                code,
            }),
        },
        lora: p.lora.map(|term| LoraTerm {
            input: term.input,
            a: term.a,
            b: term.b,
            scale: term.scale,
        }),
    }
}

/// Every projection of `projections` applied to the same `x` `[.., in]`, in order (each
/// adapter draws its dropout mask in that order).
pub fn project<B: Backend, const D: usize, const N: usize>(
    projections: [&Projection<B>; N],
    x: Tensor<B, D>,
) -> [Tensor<B, D>; N] {
    let dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let x = x.reshape([rows, dims[D - 1]]);
    let operands = projections.map(|p| p.operands(x.clone())).into();
    let ys = adapted_linears(x, operands);
    let mut ys = ys.into_iter().map(|y| {
        let mut out_dims = dims;
        out_dims[D - 1] = y.dims()[1];
        y.reshape(out_dims)
    });
    std::array::from_fn(|_| ys.next().expect("one output per projection"))
}

/// The frozen weight of a projection: dense, or NF4 (QLoRA) dequantized at every use.
#[derive(Module, Debug)]
pub enum BaseWeight<B: Backend> {
    Dense(Param<Tensor<B, 2>>),
    Nf4(Nf4Weight<B>),
}

impl<B: Backend> BaseWeight<B> {
    /// The dense `[out, in]` weight (NF4 dequantized with burn's operations).
    pub fn dense(&self) -> Tensor<B, 2> {
        match self {
            BaseWeight::Dense(w) => w.val(),
            BaseWeight::Nf4(q) => q.dequantize(),
        }
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        match self {
            BaseWeight::Dense(w) => w.val().dims(),
            BaseWeight::Nf4(q) => q.shape(),
        }
    }
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
        let [y] = project([self], x);
        y
    }

    /// The operands for `x` `[rows, in]` (drawing the adapter's dropout mask).
    fn operands(&self, x: Tensor<B, 2>) -> Operands<B> {
        Operands {
            base: self.base.clone(),
            lora: self.lora.as_ref().map(|lora| lora.term(x)),
        }
    }

    /// `(out, in)`.
    pub fn shape(&self) -> (usize, usize) {
        let [out, inp] = self.base.shape();
        (out, inp)
    }
}

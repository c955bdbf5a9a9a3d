//! QLoRA projections `y = x · Wᵀ + s · (input · Aᵀ) · Bᵀ` as custom operations whose products all
//! run through cuBLAS, forward and backward, on bf16 CUDA tensors; NF4 weights are dequantized
//! by a kernel of tigerflow's into a scratch buffer right before their product.
//!
//! The base weight `W` is frozen: the backward pass computes the gradients of `x`, of the
//! adapter's input (`dropout(x)`, whose own backward pass applies the mask) and of `A` and `B`,
//! never `W`'s, and it keeps only the packed NF4 weight, not the dense one.
//!
//! Each operation is ordered with burn's stream by two one-thread kernels and two stream memory
//! operations (see `bridge`), a few microseconds of idle GPU per call. So the projections that
//! read the same `x` (q, k, v; gate, up) run their forward products in one operation, and only
//! products large enough to repay that cost come here (`MIN_MACS`).

use std::cell::Cell;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::Int;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};

use crate::bridge::{
    CudaTensor, Fused, FusedTensor, Trained, empty, launch_ordered, ordinal, primitive, queue_all,
    same, tensor,
};
use crate::gemm::{Operand, gemm};
use crate::gpu::Gpu;
use crate::kernels::NF4_THREADS;

/// The frozen weight `[out, in]` of a projection, as the operation reads it.
pub enum FrozenWeight<B: Backend> {
    Dense(Tensor<B, 2>),
    /// NF4 codes packed eight to an i32 word (element `8k + j` in bits `4j..4j+4` of word `k`),
    /// one scale per block of `blocksize` elements, and the 16-entry code book.
    Nf4 {
        words: Tensor<B, 1, Int>,
        absmax: Tensor<B, 1>,
        code: Tensor<B, 1>,
        shape: [usize; 2],
        blocksize: usize,
    },
}

/// An adapter's operands: `Δy = input · Aᵀ · Bᵀ · scale`, with `input` `[rows, in]` (the
/// projection's input after dropout), `a` `[r, in]` and `b` `[out, r]`.
pub struct LoraOperands<B: Backend> {
    pub input: Tensor<B, 2>,
    pub a: Tensor<B, 2>,
    pub b: Tensor<B, 2>,
    pub scale: f64,
}

/// What one projection computes with: its frozen weight and, with an adapter, the adapter's.
pub struct Projection<B: Backend> {
    pub base: FrozenWeight<B>,
    pub lora: Option<LoraOperands<B>>,
}

type Inputs<B> = (Tensor<B, 2>, Vec<Projection<B>>);

/// Multiply-adds (`rows · in · Σ out`) below which burn's matmul is kept. Each operation leaves
/// the GPU idle for a few microseconds while the two streams hand over (`bridge`), and cuBLAS
/// saves about 4.4e-15 s per multiply-add over burn's matmul on 7B's products (H100,
/// docs/perf-log.md); on SmolLM2-135M's o projection (8192 rows, 2.7e9) burn's matmul and its
/// adapter's took 21–36 ms of GPU time per micro-batch (docs/perf-log.md, the pass-20 profile), so
/// 2^31 sends every projection of both shapes to cuBLAS. Decoding (a few rows) stays on burn.
pub(crate) const MIN_MACS: usize = 1 << 31;

thread_local! {
    /// This thread's threshold: [`MIN_MACS`] outside [`with_every_projection`].
    static THRESHOLD: Cell<usize> = const { Cell::new(MIN_MACS) };
}

/// Runs `f` with every projection that the operation serves taking it on this thread, whatever
/// its size, and restores the threshold after, even if `f` panics.
pub(crate) fn with_every_projection<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            THRESHOLD.set(self.0);
        }
    }
    let _restore = Restore(THRESHOLD.replace(0));
    f()
}

/// `x · Wᵀ` plus the adapter's term for each of `projections` reading the same `x` `[rows, in]`,
/// through cuBLAS when every tensor is bf16 on the CUDA backend (with or without autodiff), the
/// products are large enough and cuBLAS loads; otherwise the inputs come back untouched.
pub fn lora_linears<B: Backend>(
    x: Tensor<B, 2>,
    projections: Vec<Projection<B>>,
) -> Result<Vec<Tensor<B, 2>>, Inputs<B>> {
    if !supported(&x, &projections) {
        return Err((x, projections));
    }
    let inputs = match same::<Inputs<B>, Inputs<Trained>>((x, projections)) {
        Ok((x, projections)) => {
            let ys = tracked(x, projections);
            return Ok(same(ys).unwrap_or_else(|_| unreachable!("B is Trained")));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B>, Inputs<Fused>>(inputs) {
        Ok((x, projections)) => {
            let items = projections
                .into_iter()
                .map(|p| {
                    let lora = p.lora.map(|term| Adapter {
                        input: primitive(term.input),
                        a: primitive(term.a),
                        b: primitive(term.b),
                        scale: term.scale as f32,
                    });
                    (frozen(p.base), lora)
                })
                .collect();
            let ys = forward(primitive(x), items)
                .into_iter()
                .map(|(y, _)| tensor::<2>(y))
                .collect::<Vec<_>>();
            Ok(same(ys).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(inputs) => Err(inputs),
    }
}

/// bf16 everywhere (NF4 codes as i32 words whose blocks hold whole words), enough work, on an
/// Ampere or newer CUDA device where cuBLAS loads.
fn supported<B: Backend>(x: &Tensor<B, 2>, projections: &[Projection<B>]) -> bool {
    let bf16 = |t: &Tensor<B, 2>| t.dtype() == DType::BF16;
    let [rows, inner] = x.dims();
    let outer: usize = projections
        .iter()
        .map(|p| match &p.base {
            FrozenWeight::Dense(w) => w.dims()[0],
            FrozenWeight::Nf4 { shape, .. } => shape[0],
        })
        .sum();
    let base_ok = |base: &FrozenWeight<B>| match base {
        FrozenWeight::Dense(w) => bf16(w),
        FrozenWeight::Nf4 {
            words,
            absmax,
            code,
            shape,
            blocksize,
        } => {
            words.dtype() == DType::I32
                && absmax.dtype() == DType::BF16
                && code.dtype() == DType::BF16
                && blocksize.is_multiple_of(8)
                && (shape[0] * shape[1]).is_multiple_of(8)
        }
    };
    rows * inner * outer >= THRESHOLD.get()
        && bf16(x)
        && projections.iter().all(|p| {
            base_ok(&p.base)
                && p.lora
                    .as_ref()
                    .is_none_or(|l| bf16(&l.input) && bf16(&l.a) && bf16(&l.b))
        })
        && ordinal(&x.device()).is_some_and(|o| {
            let gpu = Gpu::of(o);
            gpu.ampere() && gpu.blas().is_some()
        })
}

/// A tensor whose two dimensions are known: burn's while an operation is queued, the buffer
/// when it runs.
trait Matrix {
    fn dims2(&self) -> [usize; 2];
}

impl Matrix for FusedTensor {
    fn dims2(&self) -> [usize; 2] {
        [self.shape[0], self.shape[1]]
    }
}

impl Matrix for CudaTensor {
    fn dims2(&self) -> [usize; 2] {
        let shape = self.meta.shape();
        [shape[0], shape[1]]
    }
}

/// A frozen weight: dense `[n, k]`, or NF4.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a few live per projection call; boxing would only add an allocation"
)]
enum Frozen<T> {
    Dense(T),
    Nf4(PackedNf4<T>),
}

/// An NF4 weight `[n, k]`: codes packed eight to an i32 word, one scale per block and the
/// 16-entry code book.
#[derive(Debug, Clone)]
struct PackedNf4<T> {
    words: T,
    absmax: T,
    code: T,
    shape: [usize; 2],
    blocksize: usize,
}

impl<T: Matrix> Frozen<T> {
    /// `[n, k]`.
    fn shape(&self) -> [usize; 2] {
        match self {
            Frozen::Dense(w) => w.dims2(),
            Frozen::Nf4(q) => q.shape,
        }
    }
}

impl<T> Frozen<T> {
    fn tensors(&self) -> Vec<&T> {
        match self {
            Frozen::Dense(w) => vec![w],
            Frozen::Nf4(q) => vec![&q.words, &q.absmax, &q.code],
        }
    }

    /// The same weight with each tensor replaced by `f`'s, in the order of [`Frozen::tensors`].
    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> Frozen<U> {
        match self {
            Frozen::Dense(w) => Frozen::Dense(f(w)),
            Frozen::Nf4(q) => Frozen::Nf4(PackedNf4 {
                words: f(q.words),
                absmax: f(q.absmax),
                code: f(q.code),
                shape: q.shape,
                blocksize: q.blocksize,
            }),
        }
    }
}

fn frozen(base: FrozenWeight<Fused>) -> Frozen<FusedTensor> {
    match base {
        FrozenWeight::Dense(w) => Frozen::Dense(primitive(w)),
        FrozenWeight::Nf4 {
            words,
            absmax,
            code,
            shape,
            blocksize,
        } => Frozen::Nf4(PackedNf4 {
            words: words.into_primitive(),
            absmax: primitive(absmax),
            code: primitive(code),
            shape,
            blocksize,
        }),
    }
}

/// The frozen weight's tensors without autodiff: it takes no gradient.
fn untracked(base: FrozenWeight<Trained>) -> FrozenWeight<Fused> {
    match base {
        FrozenWeight::Dense(w) => FrozenWeight::Dense(w.inner()),
        FrozenWeight::Nf4 {
            words,
            absmax,
            code,
            shape,
            blocksize,
        } => FrozenWeight::Nf4 {
            words: words.inner(),
            absmax: absmax.inner(),
            code: code.inner(),
            shape,
            blocksize,
        },
    }
}

/// The adapter: input `[m, k]`, `A` `[r, k]`, `B` `[n, r]`.
#[derive(Debug, Clone)]
struct Adapter<T> {
    input: T,
    a: T,
    b: T,
    scale: f32,
}

impl<T: Matrix> Adapter<T> {
    fn rank(&self) -> usize {
        self.a.dims2()[0]
    }
}

impl<T> Adapter<T> {
    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> Adapter<U> {
        Adapter {
            input: f(self.input),
            a: f(self.a),
            b: f(self.b),
            scale: self.scale,
        }
    }
}

/// One projection's operands: its frozen weight and its adapter, if any.
type Item<T> = (Frozen<T>, Option<Adapter<T>>);

/// What the backward pass of one projection needs: its frozen weight, and with an adapter its
/// operands and `t = input · Aᵀ`.
#[derive(Debug, Clone)]
struct Saved<T> {
    w: Frozen<T>,
    lora: Option<(Adapter<T>, T)>,
}

impl<T> Saved<T> {
    fn map<U>(self, f: &mut impl FnMut(T) -> U) -> Saved<U> {
        Saved {
            w: self.w.map(f),
            lora: self.lora.map(|(adapter, t)| (adapter.map(f), f(t))),
        }
    }
}

fn handle(t: &CudaTensor) -> Arc<CudaBlas> {
    Gpu::of(t.device.index)
        .blas()
        .expect("checked by `supported`")
        .clone()
}

/// Where the dense weights are read during one launch: NF4 weights are dequantized into
/// `scratch`, one at a time, each right before its products (the stream runs in order, so
/// the next dequantization starts after the previous products are done).
struct Weights<'a> {
    stream: &'a Arc<CudaStream>,
    scratch: Option<CudaTensor>,
}

impl<'a> Weights<'a> {
    /// A scratch buffer large enough for the largest NF4 weight of `frozen`, if any.
    fn new<'f>(
        stream: &'a Arc<CudaStream>,
        like: &CudaTensor,
        frozen: impl Iterator<Item = &'f Frozen<CudaTensor>>,
    ) -> Self {
        let largest = frozen
            .filter(|w| matches!(w, Frozen::Nf4(_)))
            .map(|w| w.shape()[0] * w.shape()[1])
            .max();
        Weights {
            stream,
            scratch: largest.map(|n| empty(like, [n], DType::BF16)),
        }
    }

    /// The address of `w`'s dense values, after queueing its dequantization when it is NF4.
    ///
    /// # Safety
    /// `at` must give the live addresses of `w`'s buffers and of the scratch buffer.
    unsafe fn dense(
        &self,
        w: &Frozen<CudaTensor>,
        at: &dyn Fn(&CudaTensor) -> u64,
    ) -> Result<u64, Box<dyn std::error::Error>> {
        let q = match w {
            Frozen::Dense(w) => return Ok(at(w)),
            Frozen::Nf4(q) => q,
        };
        let scratch = self.scratch.as_ref().expect("sized for every NF4 weight");
        let out = at(scratch);
        let n_words = (q.shape[0] * q.shape[1] / 8) as i32;
        let words_per_block = (q.blocksize / 8) as i32;
        let (words, absmax, code) = (at(&q.words), at(&q.absmax), at(&q.code));
        let kernel = Gpu::of(scratch.device.index).nf4();
        let mut launch = self.stream.launch_builder(kernel);
        launch.arg(&words).arg(&absmax).arg(&code).arg(&out);
        launch.arg(&n_words).arg(&words_per_block);
        let config = LaunchConfig {
            grid_dim: ((n_words as u32).div_ceil(NF4_THREADS), 1, 1),
            block_dim: (NF4_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match `nf4_dequantize` in nf4.cu: `words` holds n_words i32,
        // `absmax` one bf16 per block, `code` 16 bf16, and the scratch n_words * 8 bf16 (a
        // fresh allocation, 16-byte aligned); `supported` checked the divisibility.
        unsafe { launch.launch(config) }?;
        Ok(out)
    }
}

/// The device address of `tensor`, one of `tensors`, whose addresses are `addresses`.
fn address_of(tensors: &[&CudaTensor], addresses: &[u64], tensor: &CudaTensor) -> u64 {
    let index = tensors
        .iter()
        .position(|t| std::ptr::eq(*t, tensor))
        .expect("the tensor was handed to `launch_ordered`");
    addresses[index]
}

/// For each projection, `y` `[m, n]` and, with an adapter, `t = input · Aᵀ` `[m, r]`, queued.
fn forward(
    x: FusedTensor,
    items: Vec<Item<FusedTensor>>,
) -> Vec<(FusedTensor, Option<FusedTensor>)> {
    let m = x.shape[0];
    let bf16 = |n: usize| ([m, n].into(), DType::BF16);
    let specs = items
        .iter()
        .flat_map(|(w, lora)| {
            [
                Some(bf16(w.shape()[0])),
                lora.as_ref().map(|l| bf16(l.rank())),
            ]
        })
        .flatten()
        .collect();
    let mut inputs = vec![x];
    let mut take = |t| inputs.push(t);
    let layout: Vec<Item<()>> = items
        .into_iter()
        .map(|(w, lora)| (w.map(&mut take), lora.map(|l| l.map(&mut take))))
        .collect();
    let has_adapter: Vec<bool> = layout.iter().map(|(_, lora)| lora.is_some()).collect();
    let outputs = queue_all("lora_linears", inputs, specs, move |inputs| {
        let mut inputs = inputs.into_iter().map(into_contiguous);
        let x = inputs.next().expect("x comes first");
        let mut next = |()| inputs.next().expect("one buffer per queued tensor");
        let items: Vec<Item<CudaTensor>> = layout
            .iter()
            .cloned()
            .map(|(w, lora)| (w.map(&mut next), lora.map(|l| l.map(&mut next))))
            .collect();
        launch_forward(&x, &items)
            .into_iter()
            .flat_map(|(y, t)| std::iter::once(y).chain(t))
            .collect()
    });
    let mut outputs = outputs.into_iter();
    has_adapter
        .into_iter()
        .map(|lora| {
            let y = outputs.next().expect("one output per projection");
            (y, lora.then(|| outputs.next().expect("t beside y")))
        })
        .collect()
}

/// The products of [`forward`], in one launch.
fn launch_forward(
    x: &CudaTensor,
    items: &[Item<CudaTensor>],
) -> Vec<(CudaTensor, Option<CudaTensor>)> {
    let [m, k] = [x.meta.shape()[0], x.meta.shape()[1]];
    let outputs: Vec<(CudaTensor, Option<CudaTensor>)> = items
        .iter()
        .map(|(w, lora)| {
            let y = empty(x, [m, w.shape()[0]], DType::BF16);
            let t = lora.as_ref().map(|l| empty(x, [m, l.rank()], DType::BF16));
            (y, t)
        })
        .collect();
    let stream = Gpu::of(x.device.index).stream().clone();
    let weights = Weights::new(&stream, x, items.iter().map(|(w, _)| w));
    let mut tensors = vec![x];
    tensors.extend(&weights.scratch);
    for ((w, lora), (y, t)) in items.iter().zip(&outputs) {
        tensors.extend(w.tensors());
        tensors.push(y);
        if let (Some(l), Some(t)) = (lora, t) {
            tensors.extend([&l.input, &l.a, &l.b, t]);
        }
    }
    let blas = handle(x);
    launch_ordered(&stream, &tensors, |addresses| {
        let at = |t: &CudaTensor| address_of(&tensors, addresses, t);
        let (plain, transposed) = (
            |t: &CudaTensor| Operand::plain(at(t)),
            |t: &CudaTensor| Operand::transposed(at(t)),
        );
        for ((w, lora), (y, t)) in items.iter().zip(&outputs) {
            let n = w.shape()[0];
            // SAFETY: every buffer is contiguous with the shape named in its product and
            // borrowed until the stream has run them (`launch_ordered`).
            unsafe {
                let w = Operand::transposed(weights.dense(w, &at)?);
                gemm(&blas, [m, n, k], 1.0, plain(x), w, 0.0, at(y))?;
                if let (Some(l), Some(t)) = (lora, t) {
                    let r = l.rank();
                    gemm(
                        &blas,
                        [m, r, k],
                        1.0,
                        plain(&l.input),
                        transposed(&l.a),
                        0.0,
                        at(t),
                    )?;
                    gemm(
                        &blas,
                        [m, n, r],
                        l.scale,
                        plain(t),
                        transposed(&l.b),
                        1.0,
                        at(y),
                    )?;
                }
            }
        }
        Ok(())
    });
    outputs
}

/// Which gradients the backward pass computes: those of the tracked inputs.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    x: bool,
    input: bool,
    a: bool,
    b: bool,
}

/// The gradients of [`launch_backward`] that `wanted` names, queued: those of x, the adapter's
/// input, A and B, in that order.
fn backward(
    saved: Saved<FusedTensor>,
    dy: FusedTensor,
    wanted: Wanted,
) -> [Option<FusedTensor>; 4] {
    let [m, n] = dy.dims2();
    let k = saved.w.shape()[1];
    let r = saved.lora.as_ref().map_or(0, |(l, _)| l.rank());
    let lora = saved.lora.is_some();
    let made = [
        wanted.x,
        lora && wanted.input,
        lora && wanted.a,
        lora && wanted.b,
    ];
    let shapes = [[m, k], [m, k], [r, k], [n, r]];
    let specs = made
        .iter()
        .zip(shapes)
        .filter(|(made, _)| **made)
        .map(|(_, shape)| (shape.into(), DType::BF16))
        .collect();
    let mut inputs = vec![dy];
    let layout = saved.map(&mut |t| inputs.push(t));
    let outputs = queue_all("lora_linear_backward", inputs, specs, move |inputs| {
        let mut inputs = inputs.into_iter().map(into_contiguous);
        let dy = inputs.next().expect("dy comes first");
        let saved = layout
            .clone()
            .map(&mut |()| inputs.next().expect("one buffer per queued tensor"));
        launch_backward(&saved, &dy, wanted)
            .into_iter()
            .flatten()
            .collect()
    });
    let mut outputs = outputs.into_iter();
    made.map(|made| made.then(|| outputs.next().expect("one output per gradient made")))
}

/// The gradients of x, the adapter's input, A and B for the output gradient `dy` `[m, n]`:
/// `dx = dy · W`, `dt = s · dy · B`, `dB = s · dyᵀ · t`, `dA = dtᵀ · input`, `d_input = dt · A`.
fn launch_backward(
    saved: &Saved<CudaTensor>,
    dy: &CudaTensor,
    wanted: Wanted,
) -> [Option<CudaTensor>; 4] {
    let (m, n) = (dy.meta.shape()[0], dy.meta.shape()[1]);
    let k = saved.w.shape()[1];
    let new = |wanted: bool, shape: [usize; 2]| wanted.then(|| empty(dy, shape, DType::BF16));
    let dx = new(wanted.x, [m, k]);
    let lora = saved.lora.as_ref();
    let r = lora.map_or(0, |(l, _)| l.rank());
    let dt = lora.map(|_| empty(dy, [m, r], DType::BF16));
    let d_input = new(lora.is_some() && wanted.input, [m, k]);
    let da = new(lora.is_some() && wanted.a, [r, k]);
    let db = new(lora.is_some() && wanted.b, [n, r]);

    let stream = Gpu::of(dy.device.index).stream().clone();
    let weights = Weights::new(&stream, dy, [&saved.w].into_iter());
    let mut tensors = vec![dy];
    tensors.extend(saved.w.tensors());
    tensors.extend(&weights.scratch);
    tensors.extend(&dx);
    if let (Some((l, t)), Some(dt)) = (lora, &dt) {
        tensors.extend([&l.input, &l.a, &l.b, t, dt]);
        tensors.extend([&d_input, &da, &db].into_iter().flatten());
    }
    let blas = handle(dy);
    launch_ordered(&stream, &tensors, |addresses| {
        let at = |t: &CudaTensor| address_of(&tensors, addresses, t);
        let (plain, transposed) = (
            |t: &CudaTensor| Operand::plain(at(t)),
            |t: &CudaTensor| Operand::transposed(at(t)),
        );
        // SAFETY: as in `forward`; the stream runs the products in order (`dt` before its
        // readers).
        unsafe {
            if let Some(dx) = &dx {
                let w = Operand::plain(weights.dense(&saved.w, &at)?);
                gemm(&blas, [m, k, n], 1.0, plain(dy), w, 0.0, at(dx))?;
            }
            let (Some((l, t)), Some(dt)) = (lora, &dt) else {
                return Ok(());
            };
            let s = l.scale;
            gemm(&blas, [m, r, n], s, plain(dy), plain(&l.b), 0.0, at(dt))?;
            if let Some(db) = &db {
                gemm(&blas, [n, r, m], s, transposed(dy), plain(t), 0.0, at(db))?;
            }
            if let Some(da) = &da {
                gemm(
                    &blas,
                    [r, k, m],
                    1.0,
                    transposed(dt),
                    plain(&l.input),
                    0.0,
                    at(da),
                )?;
            }
            if let Some(d_input) = &d_input {
                gemm(
                    &blas,
                    [m, k, r],
                    1.0,
                    plain(dt),
                    plain(&l.a),
                    0.0,
                    at(d_input),
                )?;
            }
        }
        Ok(())
    });
    [dx, d_input, da, db]
}

/// The backward pass of a projection: parent `x` alone (`N = 1`), or `x`, the adapter's input,
/// `A` and `B` (`N = 4`).
#[derive(Debug)]
struct ProjectionBackward<const N: usize>;

impl<const N: usize> Backward<Fused, N> for ProjectionBackward<N> {
    type State = Saved<FusedTensor>;

    fn backward(
        self,
        ops: Ops<Saved<FusedTensor>, N>,
        grads: &mut Gradients,
        _: &mut Checkpointer,
    ) {
        let dy = grads.consume::<Fused>(&ops.node);
        let tracked = |i: usize| ops.parents.get(i).is_some_and(Option::is_some);
        let wanted = Wanted {
            x: tracked(0),
            input: tracked(1),
            a: tracked(2),
            b: tracked(3),
        };
        let computed = backward(ops.state, dy, wanted);
        for (node, grad) in ops.parents.iter().zip(computed) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Fused>(node.id, grad);
            }
        }
    }
}

/// The autodiff operations: one forward launch for every projection, then one autodiff node per
/// projection, each saving what its backward pass needs when any of its inputs is tracked.
fn tracked(
    x: Tensor<Trained, 2>,
    projections: Vec<Projection<Trained>>,
) -> Vec<Tensor<Trained, 2>> {
    let x = x.into_primitive().tensor();
    let mut nodes = Vec::with_capacity(projections.len());
    let mut items = Vec::with_capacity(projections.len());
    for p in projections {
        let w = frozen(untracked(p.base));
        let Some(term) = p.lora else {
            nodes.push(None);
            items.push((w, None));
            continue;
        };
        let [input, a, b] = [term.input, term.a, term.b].map(|t| t.into_primitive().tensor());
        nodes.push(Some([&x, &input, &a, &b].map(|t| t.node.clone())));
        let adapter = Adapter {
            input: input.primitive,
            a: a.primitive,
            b: b.primitive,
            scale: term.scale as f32,
        };
        items.push((w, Some(adapter)));
    }
    let outputs = forward(x.primitive.clone(), items.clone());
    let results = items
        .into_iter()
        .zip(outputs)
        .zip(nodes)
        .map(|(((w, lora), (y, t)), nodes)| match (lora, t, nodes) {
            (Some(adapter), Some(t), Some(nodes)) => {
                let saved = Saved {
                    w,
                    lora: Some((adapter, t)),
                };
                match ProjectionBackward::<4>
                    .prepare::<NoCheckpointing>(nodes)
                    .compute_bound()
                    .stateful()
                {
                    OpsKind::Tracked(prep) => prep.finish(saved, y),
                    OpsKind::UnTracked(prep) => prep.finish(y),
                }
            }
            _ => match ProjectionBackward::<1>
                .prepare::<NoCheckpointing>([x.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(Saved { w, lora: None }, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
        });
    results
        .map(|result| Tensor::from_primitive(TensorPrimitive::Float(result)))
        .collect()
}

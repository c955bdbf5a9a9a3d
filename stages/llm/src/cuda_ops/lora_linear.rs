//! The QLoRA projection `y = x · Wᵀ + s · (input · Aᵀ) · Bᵀ` as one operation whose products all
//! run through cuBLAS, forward and backward, on bf16 CUDA tensors.
//!
//! The base weight `W` is frozen: the backward pass computes the gradients of `x`, of the
//! adapter's input (`dropout(x)`, whose mask burn's autodiff applies) and of `A` and `B`, never
//! `W`'s. One operation per projection keeps the host syncs that order tigerflow's stream with
//! burn's (see `bridge`) to two per projection and pass.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use cudarc::cublas::CudaBlas;

use super::bridge::{
    CudaTensor, Fused, Trained, cube_float, empty, fused, launch_ordered, ordinal, same,
};
use super::gemm::{Operand, blas, gemm};
use super::kernels::stream;
use crate::backend::Backend;
use crate::lora::LoraTerm;

type Inputs<B> = (Tensor<B, 2>, Tensor<B, 2>, Option<LoraTerm<B>>);

/// [`crate::linear::adapted_linear`] through cuBLAS when every tensor is bf16 on the CUDA
/// backend (with or without autodiff) and cuBLAS loads; otherwise the inputs come back untouched.
pub fn lora_linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    lora: Option<LoraTerm<B>>,
) -> Result<Tensor<B, 2>, Inputs<B>> {
    if !supported(&x, &weight, lora.as_ref()) {
        return Err((x, weight, lora));
    }
    let inputs = match same::<Inputs<B>, Inputs<Trained>>((x, weight, lora)) {
        Ok((x, w, lora)) => {
            return Ok(same(tracked(x, w, lora)).unwrap_or_else(|_| unreachable!("B is Trained")));
        }
        Err(inputs) => inputs,
    };
    match same::<Inputs<B>, Inputs<Fused>>(inputs) {
        Ok((x, w, lora)) => {
            let [x, w] = [x, w].map(|t| cube_float(t.into_primitive().tensor()));
            let lora = lora.map(|term| Adapter {
                input: cube_float(term.input.into_primitive().tensor()),
                a: cube_float(term.a.into_primitive().tensor()),
                b: cube_float(term.b.into_primitive().tensor()),
                scale: term.scale as f32,
            });
            let (y, _) = forward(&x, &w, lora.as_ref());
            let y = Tensor::<Fused, 2>::from_primitive(TensorPrimitive::Float(fused(y)));
            Ok(same(y).unwrap_or_else(|_| unreachable!("B is Fused")))
        }
        Err(inputs) => Err(inputs),
    }
}

/// Fewer rows than this stay on burn's matmul: a decoding step's products (a row per sequence)
/// take microseconds, less than the two host syncs this operation costs.
const MIN_ROWS: usize = 128;

/// bf16 everywhere, enough rows, on a CUDA device where cuBLAS loads.
fn supported<B: Backend>(x: &Tensor<B, 2>, w: &Tensor<B, 2>, lora: Option<&LoraTerm<B>>) -> bool {
    let bf16 = |t: &Tensor<B, 2>| t.dtype() == DType::BF16;
    x.dims()[0] >= MIN_ROWS
        && bf16(x)
        && bf16(w)
        && lora.is_none_or(|l| bf16(&l.input) && bf16(&l.a) && bf16(&l.b))
        && ordinal(&x.device()).is_some_and(|o| blas(o).is_some())
}

/// The adapter's buffers: input `[m, k]`, `A` `[r, k]`, `B` `[n, r]`.
#[derive(Debug, Clone)]
struct Adapter {
    input: CudaTensor,
    a: CudaTensor,
    b: CudaTensor,
    scale: f32,
}

/// What the backward pass needs: the frozen weight, and with an adapter its buffers and
/// `t = input · Aᵀ`.
#[derive(Debug, Clone)]
struct Saved {
    w: CudaTensor,
    lora: Option<(Adapter, CudaTensor)>,
}

/// `[m, k]`, `[n, k]` → (m, n, k).
fn dims(x: &CudaTensor, w: &CudaTensor) -> (usize, usize, usize) {
    let (x, w) = (x.meta.shape(), w.meta.shape());
    (x[0], w[0], x[1])
}

fn handle(t: &CudaTensor) -> std::sync::Arc<CudaBlas> {
    blas(t.device.index).expect("checked by `supported`")
}

/// `y` `[m, n]`, and `t = input · Aᵀ` `[m, r]` when there is an adapter.
fn forward(
    x: &CudaTensor,
    w: &CudaTensor,
    lora: Option<&Adapter>,
) -> (CudaTensor, Option<CudaTensor>) {
    let (m, n, k) = dims(x, w);
    let y = empty(x, [m, n], DType::BF16);
    let t = lora.map(|l| empty(x, [m, l.a.meta.shape()[0]], DType::BF16));
    let mut tensors = vec![x, w, &y];
    if let (Some(l), Some(t)) = (lora, &t) {
        tensors.extend([&l.input, &l.a, &l.b, t]);
    }
    let blas = handle(x);
    launch_ordered(&stream(x.device.index), &tensors, |addresses| {
        let at = |t: &CudaTensor| address_of(&tensors, addresses, t);
        let (plain, transposed) = (
            |t: &CudaTensor| Operand::plain(at(t)),
            |t: &CudaTensor| Operand::transposed(at(t)),
        );
        // SAFETY: the buffers are contiguous with the shapes named in each product, borrowed
        // until the stream has run them (`launch_ordered`).
        unsafe {
            gemm(&blas, [m, n, k], 1.0, plain(x), transposed(w), 0.0, at(&y))?;
            if let (Some(l), Some(t)) = (lora, &t) {
                let r = l.a.meta.shape()[0];
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
                    at(&y),
                )?;
            }
        }
        Ok(())
    });
    (y, t)
}

/// Which gradients the backward pass computes: those of the tracked inputs.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    x: bool,
    input: bool,
    a: bool,
    b: bool,
}

/// The gradients of x, the adapter's input, A and B for the output gradient `dy`.
fn backward(s: &Saved, dy: &CudaTensor, wanted: Wanted) -> [Option<CudaTensor>; 4] {
    let (m, n, k) = (dy.meta.shape()[0], dy.meta.shape()[1], s.w.meta.shape()[1]);
    let new = |wanted: bool, shape: [usize; 2]| wanted.then(|| empty(dy, shape, DType::BF16));
    let dx = new(wanted.x, [m, k]);
    let Some((l, t)) = &s.lora else {
        gemm_backward(dy, &s.w, dx.as_ref(), None);
        return [dx, None, None, None];
    };
    let r = l.a.meta.shape()[0];
    let dt = empty(dy, [m, r], DType::BF16);
    let d_input = new(wanted.input, [m, k]);
    let da = new(wanted.a, [r, k]);
    let db = new(wanted.b, [n, r]);
    let adapter = AdapterGrads {
        adapter: l,
        t,
        dt: &dt,
        d_input: d_input.as_ref(),
        da: da.as_ref(),
        db: db.as_ref(),
    };
    gemm_backward(dy, &s.w, dx.as_ref(), Some(adapter));
    [dx, d_input, da, db]
}

/// The adapter's part of a backward pass: its saved buffers, the scratch `dt` `[m, r]` and the
/// gradients to write.
struct AdapterGrads<'a> {
    adapter: &'a Adapter,
    t: &'a CudaTensor,
    dt: &'a CudaTensor,
    d_input: Option<&'a CudaTensor>,
    da: Option<&'a CudaTensor>,
    db: Option<&'a CudaTensor>,
}

/// Runs the backward products:
/// `dx = dy · W`, `dt = s · dy · B`, `dB = s · dyᵀ · t`, `dA = dtᵀ · input`, `d_input = dt · A`.
fn gemm_backward(
    dy: &CudaTensor,
    w: &CudaTensor,
    dx: Option<&CudaTensor>,
    lora: Option<AdapterGrads<'_>>,
) {
    let (m, n) = (dy.meta.shape()[0], dy.meta.shape()[1]);
    let k = w.meta.shape()[1];
    let mut tensors = vec![dy, w];
    tensors.extend(dx);
    if let Some(g) = &lora {
        let l = g.adapter;
        tensors.extend([&l.input, &l.a, &l.b, g.t, g.dt]);
        tensors.extend([g.d_input, g.da, g.db].into_iter().flatten());
    }
    let blas = handle(dy);
    launch_ordered(&stream(dy.device.index), &tensors, |addresses| {
        let at = |t: &CudaTensor| address_of(&tensors, addresses, t);
        let (plain, transposed) = (
            |t: &CudaTensor| Operand::plain(at(t)),
            |t: &CudaTensor| Operand::transposed(at(t)),
        );
        // SAFETY: as in `forward`: contiguous buffers of the shapes named, borrowed until the
        // stream has run the products, which it runs in order (`dt` before its readers).
        unsafe {
            if let Some(dx) = dx {
                gemm(&blas, [m, k, n], 1.0, plain(dy), plain(w), 0.0, at(dx))?;
            }
            let Some(g) = &lora else { return Ok(()) };
            let (l, s) = (g.adapter, g.adapter.scale);
            let r = l.a.meta.shape()[0];
            gemm(&blas, [m, r, n], s, plain(dy), plain(&l.b), 0.0, at(g.dt))?;
            if let Some(db) = g.db {
                gemm(&blas, [n, r, m], s, transposed(dy), plain(g.t), 0.0, at(db))?;
            }
            if let Some(da) = g.da {
                gemm(
                    &blas,
                    [r, k, m],
                    1.0,
                    transposed(g.dt),
                    plain(&l.input),
                    0.0,
                    at(da),
                )?;
            }
            if let Some(d_input) = g.d_input {
                gemm(
                    &blas,
                    [m, k, r],
                    1.0,
                    plain(g.dt),
                    plain(&l.a),
                    0.0,
                    at(d_input),
                )?;
            }
        }
        Ok(())
    });
}

/// The device address of `tensor`, one of `tensors`, whose addresses are `addresses`.
fn address_of(tensors: &[&CudaTensor], addresses: &[u64], tensor: &CudaTensor) -> u64 {
    let index = tensors
        .iter()
        .position(|t| std::ptr::eq(*t, tensor))
        .expect("the tensor was handed to `launch_ordered`");
    addresses[index]
}

/// The backward pass of a projection: parent `x` alone (`N = 1`), or `x`, the adapter's input,
/// `A` and `B` (`N = 4`).
#[derive(Debug)]
struct ProjectionBackward<const N: usize>;

impl<const N: usize> Backward<Fused, N> for ProjectionBackward<N> {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = cube_float(grads.consume::<Fused>(&ops.node));
        let tracked = |i: usize| ops.parents.get(i).is_some_and(Option::is_some);
        let wanted = Wanted {
            x: tracked(0),
            input: tracked(1),
            a: tracked(2),
            b: tracked(3),
        };
        let computed = backward(&ops.state, &dy, wanted);
        for (node, grad) in ops.parents.iter().zip(computed) {
            if let (Some(node), Some(grad)) = (node, grad) {
                grads.register::<Fused>(node.id, fused(grad));
            }
        }
    }
}

/// The autodiff operation: saves what the backward pass needs when any input is tracked.
fn tracked(
    x: Tensor<Trained, 2>,
    w: Tensor<Trained, 2>,
    lora: Option<LoraTerm<Trained>>,
) -> Tensor<Trained, 2> {
    let x = x.into_primitive().tensor();
    let cx = cube_float(x.primitive.clone());
    let cw = cube_float(w.into_primitive().tensor().primitive);
    let Some(term) = lora else {
        let (y, _) = forward(&cx, &cw, None);
        let result = match ProjectionBackward::<1>
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Saved { w: cw, lora: None }, fused(y)),
            OpsKind::UnTracked(prep) => prep.finish(fused(y)),
        };
        return Tensor::from_primitive(TensorPrimitive::Float(result));
    };
    let [input, a, b] = [term.input, term.a, term.b].map(|t| t.into_primitive().tensor());
    let nodes = [&x, &input, &a, &b].map(|t| t.node.clone());
    let adapter = Adapter {
        input: cube_float(input.primitive.clone()),
        a: cube_float(a.primitive.clone()),
        b: cube_float(b.primitive.clone()),
        scale: term.scale as f32,
    };
    let (y, t) = forward(&cx, &cw, Some(&adapter));
    let t = t.expect("an adapter's forward pass keeps t");
    let result = match ProjectionBackward::<4>
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                w: cw,
                lora: Some((adapter, t)),
            };
            prep.finish(saved, fused(y))
        }
        OpsKind::UnTracked(prep) => prep.finish(fused(y)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(result))
}

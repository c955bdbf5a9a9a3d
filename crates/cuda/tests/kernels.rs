//! tigerflow's CUDA operations against burn's operations on the CPU in f32 (the reference each
//! operation replaces, in `tigerflow-llm`), values and gradients, on the first CUDA device in
//! bf16 (the operations serve bf16 only). Needs an NVIDIA GPU of the Hopper generation:
//!
//!     cargo test --release --features cuda -p tigerflow-cuda --test kernels
//!
//! Tolerances are relative to the reference's largest magnitude; bf16 keeps 8 bits of mantissa.
#![cfg(feature = "cuda")]

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use tigerflow_llm::attention::causal_attention;
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::concat::concat_flat;
use tigerflow_llm::linear::{BaseWeight, Operands, adapted_linears};
use tigerflow_llm::lora::LoraTerm;
use tigerflow_llm::loss::{loss_value, nll_sum};
use tigerflow_llm::model::{RmsNorm, swiglu};
use tigerflow_llm::nf4::Nf4Tensor;
use tigerflow_llm::rope::Rotary;

/// How far bf16 values (outputs, losses) may stray from the CPU's f32.
const VALUE_TOL: f32 = 3e-2;
/// How far bf16 gradients may stray.
const GRAD_TOL: f32 = 8e-2;

/// The first CUDA device, with the kernel caches under `$TIGERFLOW_CACHE` when set (a second
/// run then compiles nothing), else in cargo's scratch directory for integration tests.
fn cuda() -> burn::backend::cuda::CudaDevice {
    let cache = std::env::var_os("TIGERFLOW_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    tigerflow_llm::device::configure_cuda(&cache);
    Default::default()
}

fn to_vec<M: Backend, const D: usize>(t: Tensor<M, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// The largest difference between `got` and `reference`, relative to the reference's largest
/// magnitude.
fn max_rel(got: &[f32], reference: &[f32]) -> f32 {
    let scale = reference.iter().map(|v| v.abs()).fold(1e-12f32, f32::max);
    let worst = got
        .iter()
        .zip(reference)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    worst / scale
}

#[test]
fn flash_attention_matches_the_cpu() {
    check_flash_attention(&cuda());
}

#[test]
fn the_layer_kernels_match_the_cpu() {
    check_layer_ops(&cuda());
}

#[test]
fn the_dropout_kernel_keeps_its_specified_masks() {
    check_dropout(&cuda());
}

#[test]
fn the_cross_entropy_kernels_match_the_cpu() {
    check_cross_entropy(&cuda());
}

#[test]
fn the_cublas_projection_matches_the_cpu() {
    check_projections(&cuda());
}

#[test]
fn the_optimizers_gather_matches_the_cpu() {
    check_concat(&cuda());
}

/// Shapes of the flash-attention check: (rows, heads, kv heads, tokens, head dim).
const ATTENTION_SHAPES: [[usize; 5]; 3] =
    [[2, 4, 2, 128, 64], [1, 2, 2, 192, 128], [2, 6, 2, 256, 64]];

/// Deterministic values in [-1, 1), already rounded to bf16 so that both sides start from the
/// same numbers.
fn bf16_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            burn::tensor::bf16::from_f32(2.0 * unit - 1.0).to_f32()
        })
        .collect()
}

/// Packed segments for `rows` rows of `len` tokens: row 0 holds three samples and 20 tokens of
/// padding, the other rows one sample each.
fn attention_segments(rows: usize, len: usize) -> Vec<i64> {
    let mut ids = Vec::with_capacity(rows * len);
    for row in 0..rows {
        ids.extend((0..len).map(|i| match (row, i) {
            (0, i) if i >= len - 20 => -1,
            (0, i) if i < 50 => 0,
            (0, i) if i < 120 => 1,
            (0, _) => 2,
            _ => 0,
        }));
    }
    ids
}

/// Output and gradients of q, k and v of `sum(w · attention(q, k, v))` on `M`.
fn attention_on<M: AutodiffBackend>(shape: [usize; 5], device: &M::Device) -> [Vec<f32>; 4] {
    let [b, h, kv, l, d] = shape;
    let tensor = |dims: [usize; 4], seed| {
        let data = TensorData::new(bf16_values(dims.iter().product(), seed), dims);
        Tensor::<M, 4>::from_data(data, device)
    };
    let q = tensor([b, h, l, d], 1).require_grad();
    let k = tensor([b, kv, l, d], 2).require_grad();
    // v as the model hands it over: the projection's token-major output seen as heads.
    let v = tensor([b, l, kv, d], 3).swap_dims(1, 2).require_grad();
    let w = tensor([b, h, l, d], 4);
    let segments =
        Tensor::<M, 2, Int>::from_data(TensorData::new(attention_segments(b, l), [b, l]), device);
    let out = causal_attention(q.clone(), k.clone(), v.clone(), Some(segments));
    let grads = (out.clone() * w).sum().backward();
    let grad = |t: &Tensor<M, 4>| to_vec(t.grad(&grads).expect("an input of the loss"));
    [to_vec(out), grad(&q), grad(&k), grad(&v)]
}

/// The flash-attention kernels (bf16, with and without autodiff) against burn's attention on
/// the CPU in f32: outputs and the gradients of q, k and v, with packed samples, padding and
/// grouped heads, for both head dimensions the kernels serve; `v` token-major as the model
/// passes it, the output's gradient head-major (a copy on the way in).
fn check_flash_attention(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    for shape in ATTENTION_SHAPES {
        let [b, h, kv, l, d] = shape;
        assert!(
            tigerflow_llm::cuda::has_flash_attention(device.index, d),
            "the flash-attention kernels did not load for head dim {d}"
        );
        let cpu = attention_on::<Autodiff<CpuBackend>>(shape, &Default::default());
        let gpu = attention_on::<Autodiff<Gpu>>(shape, device);
        for ((name, gpu), cpu) in ["out", "dq", "dk", "dv"].iter().zip(&gpu).zip(&cpu) {
            let limit = if *name == "out" { VALUE_TOL } else { GRAD_TOL };
            let rel = max_rel(gpu, cpu);
            assert!(
                rel <= limit,
                "{shape:?}: {name} differs from the CPU's (max rel {rel})"
            );
        }
        let plain = |dims: [usize; 4], seed| {
            let data = TensorData::new(bf16_values(dims.iter().product(), seed), dims);
            Tensor::<Gpu, 4>::from_data(data, device)
        };
        let segments = Tensor::<Gpu, 2, Int>::from_data(
            TensorData::new(attention_segments(b, l), [b, l]),
            device,
        );
        let out = causal_attention(
            plain([b, h, l, d], 1),
            plain([b, kv, l, d], 2),
            plain([b, l, kv, d], 3).swap_dims(1, 2),
            Some(segments),
        );
        let rel = max_rel(&to_vec(out), &cpu[0]);
        assert!(
            rel <= VALUE_TOL,
            "{shape:?}: inference output (max rel {rel})"
        );
    }
}

/// Rows, tokens, heads and head dim of the layer-operation check: heads of SmolLM2's size.
const LAYER_SHAPE: [usize; 4] = [2, 96, 4, 64];
/// Where the second row's positions start: far enough that bf16 could not hold them.
const FAR_POSITION: i64 = 3_990;

/// The inputs of the layer-operation check: RMSNorm's and the rotary split's `[rows, len,
/// heads · head_dim]`, SwiGLU's gate and up at twice that width.
fn layer_inputs<M: Backend>(device: &M::Device) -> [Tensor<M, 3>; 4] {
    let [rows, len, heads, head_dim] = LAYER_SHAPE;
    let width = heads * head_dim;
    let tensor = |w: usize, seed| {
        let data = TensorData::new(bf16_values(rows * len * w, seed), [rows, len, w]);
        Tensor::<M, 3>::from_data(data, device)
    };
    [
        tensor(width, 11),
        tensor(width, 12),
        tensor(2 * width, 13),
        tensor(2 * width, 14),
    ]
}

/// RMSNorm of the first input, the rotated heads of the second (positions of the second row
/// start at `FAR_POSITION`) as `[rows · heads, len, head_dim]`, and SwiGLU of the last two.
fn layer_outputs<M: Backend>(inputs: &[Tensor<M, 3>; 4], device: &M::Device) -> [Tensor<M, 3>; 3] {
    let [rows, len, heads, head_dim] = LAYER_SHAPE;
    let width = heads * head_dim;
    let [x, q, gate, up] = inputs.clone();
    let scale: Vec<f32> = bf16_values(width, 15)
        .iter()
        .map(|v| 1.0 + 0.5 * v)
        .collect();
    let norm = RmsNorm::new(
        Tensor::from_data(TensorData::new(scale, [width]), device),
        1e-5,
    );
    let positions: Vec<i64> = (0..rows as i64)
        .flat_map(|row| (0..len as i64).map(move |i| row * FAR_POSITION + i))
        .collect();
    let ids = Tensor::<M, 2, Int>::from_data(TensorData::new(positions, [rows, len]), device);
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let rotated = Rotary::new(&inv_freq, ids)
        .apply_to_heads(q, heads)
        .reshape([rows * heads, len, head_dim]);
    [norm.forward(x), rotated, swiglu(gate, up)]
}

const LAYER_OUTPUTS: [&str; 3] = ["rms_norm", "rotary", "swiglu"];
/// The inputs each output depends on, by index into [`layer_inputs`].
const LAYER_INPUTS_USED: [&[usize]; 3] = [&[0], &[1], &[2, 3]];

/// Outputs and input gradients of the layer operations on `M`, each gradient of
/// `sum(w · output)`, named.
fn layer_grads_on<M: AutodiffBackend>(device: &M::Device) -> Vec<(String, Vec<f32>)> {
    let inputs = layer_inputs::<M>(device).map(|t| t.require_grad());
    let outputs = layer_outputs(&inputs, device);
    let mut results = Vec::new();
    for (o, out) in outputs.into_iter().enumerate() {
        let dims = out.dims();
        let w = Tensor::<M, 3>::from_data(
            TensorData::new(bf16_values(dims.iter().product(), 20 + o as u64), dims),
            device,
        );
        results.push((format!("{} out", LAYER_OUTPUTS[o]), to_vec(out.clone())));
        let grads = (out * w).sum().backward();
        for &i in LAYER_INPUTS_USED[o] {
            let grad = inputs[i].grad(&grads).expect("an input of the loss");
            results.push((format!("{} d input {i}", LAYER_OUTPUTS[o]), to_vec(grad)));
        }
    }
    results
}

/// The kernels of RMSNorm, the rotary split into heads and SwiGLU (bf16, with and without
/// autodiff) against burn's operations on the CPU in f32: outputs and input gradients, with
/// positions up to 4085 in the rotary tables.
fn check_layer_ops(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    assert!(
        tigerflow_llm::cuda::has_layer_kernels(device.index),
        "the layer kernels did not load"
    );
    let cpu = layer_grads_on::<Autodiff<CpuBackend>>(&Default::default());
    let gpu = layer_grads_on::<Autodiff<Gpu>>(device);
    assert_eq!(gpu.len(), cpu.len());
    for ((name, gpu), (_, cpu)) in gpu.iter().zip(&cpu) {
        let limit = if name.ends_with("out") {
            VALUE_TOL
        } else {
            GRAD_TOL
        };
        let rel = max_rel(gpu, cpu);
        assert!(
            rel <= limit,
            "{name} differs from the CPU's (max rel {rel})"
        );
    }
    let inputs = layer_inputs::<Gpu>(device);
    for (o, out) in layer_outputs(&inputs, device).into_iter().enumerate() {
        let name = format!("{} out", LAYER_OUTPUTS[o]);
        let (_, cpu) = cpu.iter().find(|(n, _)| *n == name).expect("every output");
        let rel = max_rel(&to_vec(out), cpu);
        assert!(rel <= VALUE_TOL, "{name} without autodiff (max rel {rel})");
    }
}

/// Shape of the dropout check (an odd count, so that the kernel's last thread has one element)
/// and its drop probability.
const DROPOUT_SHAPE: [usize; 2] = [1025, 1023];
const DROPOUT_P: f64 = 0.1;

/// splitmix64's output function, which the dropout kernel hashes with.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Which of `n` elements the first dropout call after `dropout::seed(stream)` keeps, as the
/// kernel is specified: the call's seed is `mix64(stream)`, and elements `2t` and `2t + 1` are
/// kept when the low and the high half of `mix64(seed + t · 0x9e3779b97f4a7c15)` lie below
/// `keep · 2³²`.
fn dropout_keeps(stream: u64, n: usize) -> Vec<bool> {
    let seed = mix64(stream);
    let below = ((1.0 - DROPOUT_P) * 2f64.powi(32)) as u64;
    (0..n)
        .map(|i| {
            let bits = mix64(seed.wrapping_add((i / 2) as u64 * 0x9e37_79b9_7f4a_7c15));
            let half = if i % 2 == 0 {
                bits & 0xffff_ffff
            } else {
                bits >> 32
            };
            half < below
        })
        .collect()
}

/// `dropout(x)` and the gradient of `sum(w · dropout(x))` on `M` for the stream seeded `stream`.
fn dropout_on<M: AutodiffBackend>(stream: u64, device: &M::Device) -> [Vec<f32>; 2] {
    let tensor = |seed| {
        let data = TensorData::new(
            bf16_values(DROPOUT_SHAPE.iter().product(), seed),
            DROPOUT_SHAPE,
        );
        Tensor::<M, 2>::from_data(data, device)
    };
    let x = tensor(40).require_grad();
    tigerflow_llm::dropout::seed::<M>(device, stream);
    let y = tigerflow_llm::dropout::dropout(x.clone(), DROPOUT_P);
    let grads = (y.clone() * tensor(41)).sum().backward();
    [
        to_vec(y),
        to_vec(x.grad(&grads).expect("x is an input of the loss")),
    ]
}

/// The dropout kernel: its masks are the hashes it is specified by (so a re-seeded layer drops
/// the same elements), it keeps a fraction `1 − p` with pairs independent (within five standard
/// deviations), scales what it keeps by `1 / (1 − p)` in f32 as PyTorch does, passes the gradient
/// through the same mask, and gives the same values without autodiff.
fn check_dropout(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    assert!(
        tigerflow_llm::cuda::has_layer_kernels(device.index),
        "the layer kernels did not load"
    );
    let n: usize = DROPOUT_SHAPE.iter().product();
    let stream = 7;
    let keeps = dropout_keeps(stream, n);
    let scale = (1.0 / (1.0 - DROPOUT_P)) as f32;
    let scaled = |v: f32| burn::tensor::bf16::from_f32(v * scale).to_f32();
    let [x, w] = [40, 41].map(|seed| bf16_values(n, seed));
    let [y, dx] = dropout_on::<Autodiff<Gpu>>(stream, device);
    for i in 0..n {
        let (want_y, want_dx) = if keeps[i] {
            (scaled(x[i]), scaled(w[i]))
        } else {
            (0.0, 0.0)
        };
        assert_eq!(y[i], want_y, "dropout(x)[{i}] (kept: {})", keeps[i]);
        assert_eq!(dx[i], want_dx, "d x[{i}] (kept: {})", keeps[i]);
    }

    let kept = keeps.iter().filter(|&&k| k).count() as f64 / n as f64;
    let sigma = (DROPOUT_P * (1.0 - DROPOUT_P) / n as f64).sqrt();
    assert!(
        (kept - (1.0 - DROPOUT_P)).abs() < 5.0 * sigma,
        "kept {kept} of the elements"
    );
    let pairs = n / 2;
    let both_dropped = (0..pairs)
        .filter(|t| !keeps[2 * t] && !keeps[2 * t + 1])
        .count() as f64
        / pairs as f64;
    let p2 = DROPOUT_P * DROPOUT_P;
    let sigma = (p2 * (1.0 - p2) / pairs as f64).sqrt();
    assert!(
        (both_dropped - p2).abs() < 5.0 * sigma,
        "both halves of a hash dropped in {both_dropped} of the pairs"
    );

    let x = Tensor::<Gpu, 2>::from_data(TensorData::new(x, DROPOUT_SHAPE), device);
    tigerflow_llm::dropout::seed::<Gpu>(device, stream);
    let plain = to_vec(tigerflow_llm::dropout::dropout(x, DROPOUT_P));
    assert_eq!(plain, y, "without autodiff the mask or the values differ");
}

/// Vocabulary sizes of the cross-entropy check: one read in 16-byte vectors, one not.
const LOSS_VOCABS: [usize; 2] = [1024, 1003];
/// Rows and tokens of the cross-entropy check.
const LOSS_ROWS: [usize; 2] = [2, 48];

/// Logits, labels and weights of the cross-entropy check for `vocab` entries on `M`; a quarter
/// of the tokens do not count.
fn loss_inputs<M: Backend>(
    vocab: usize,
    device: &M::Device,
) -> (Tensor<M, 3>, Tensor<M, 3, Int>, Tensor<M, 3>) {
    let [rows, len] = LOSS_ROWS;
    let tokens = rows * len;
    let values: Vec<f32> = bf16_values(tokens * vocab, 31)
        .iter()
        .map(|v| 4.0 * v)
        .collect();
    let labels: Vec<i64> = (0..tokens as i64)
        .map(|i| (i * 7919) % vocab as i64)
        .collect();
    let weights: Vec<f32> = (0..tokens).map(|i| f32::from(i % 4 != 3)).collect();
    (
        Tensor::from_data(TensorData::new(values, [rows, len, vocab]), device),
        Tensor::from_data(TensorData::new(labels, [rows, len, 1]), device),
        Tensor::from_data(TensorData::new(weights, [rows, len, 1]), device),
    )
}

/// The summed loss and the logits' gradient of [`nll_sum`] on `M`.
fn loss_on<M: AutodiffBackend>(vocab: usize, device: &M::Device) -> (f64, Vec<f32>) {
    let (logits, labels, weights) = loss_inputs::<M>(vocab, device);
    let logits = logits.require_grad();
    let loss = nll_sum(logits.clone(), labels, weights);
    let value = loss_value(loss.clone());
    let grads = loss.backward();
    (
        value,
        to_vec(logits.grad(&grads).expect("the loss's input")),
    )
}

/// The cross-entropy kernels (bf16 logits, with and without autodiff) against burn's
/// `log_softmax` on the CPU in f32: the summed loss and the logits' gradient.
fn check_cross_entropy(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    assert!(
        tigerflow_llm::cuda::has_loss_kernels(device.index),
        "the cross-entropy kernels did not load"
    );
    for vocab in LOSS_VOCABS {
        let (cpu_loss, cpu_grad) = loss_on::<Autodiff<CpuBackend>>(vocab, &Default::default());
        let (gpu_loss, gpu_grad) = loss_on::<Autodiff<Gpu>>(vocab, device);
        let (logits, labels, weights) = loss_inputs::<Gpu>(vocab, device);
        let plain_loss = loss_value(nll_sum(logits, labels, weights));
        for (name, loss) in [("autodiff", gpu_loss), ("inference", plain_loss)] {
            let rel = ((loss - cpu_loss) / cpu_loss).abs();
            assert!(
                rel <= f64::from(VALUE_TOL),
                "vocab {vocab}, {name}: loss {loss} against {cpu_loss}"
            );
        }
        let rel = max_rel(&gpu_grad, &cpu_grad);
        assert!(rel <= GRAD_TOL, "vocab {vocab}: d logits (max rel {rel})");
    }
}

/// The optimizer's gather on the bf16 CUDA backend (one copy per part) against burn's `cat` on
/// the CPU, with parts of several shapes, one transposed (non-contiguous) and one a view at an
/// odd offset, as the optimizer's split leaves its weights.
fn check_concat(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    fn parts<M: Backend>(device: &M::Device) -> Vec<Tensor<M, 2>> {
        let shapes = [[32, 64], [96, 32], [1, 8], [7, 5]];
        let mut parts: Vec<Tensor<M, 2>> = shapes
            .iter()
            .zip(1..)
            .map(|(&shape, seed)| {
                let data = TensorData::new(bf16_values(shape[0] * shape[1], seed), shape);
                Tensor::from_data(data, device)
            })
            .collect();
        parts[1] = parts[1].clone().transpose();
        let flat = parts[2].clone().flatten::<1>(0, 1);
        parts.push(
            Tensor::cat(vec![flat, parts[3].clone().flatten(0, 1)], 0)
                .narrow(0, 3, 35)
                .reshape([5, 7]),
        );
        parts
    }
    let cpu = to_vec(concat_flat(parts::<CpuBackend>(&Default::default())));
    let gpu = to_vec(concat_flat(parts::<Gpu>(device)));
    assert_eq!(gpu, cpu, "the gathered vector differs from burn's cat");
}

/// The projections of the cuBLAS check, all reading one `x` of `PROJECTION_ROWS` rows:
/// (out features, NF4 base, adapter rank; 0 for none): `2048 · 4096 · 16384` multiply-adds, enough
/// for the operation to take them (`CUBLAS_MIN_MACS`).
const PROJECTIONS: [(usize, bool, usize); 3] =
    [(4096, false, 16), (8192, true, 8), (4096, true, 0)];
const PROJECTION_ROWS: usize = 2048;
const PROJECTION_IN: usize = 4096;

/// The operands of `PROJECTIONS` on `M` for `x`, each adapter reading `x` through its own fixed
/// dropout-like mask, and the adapters' (A, B).
#[allow(clippy::type_complexity)]
fn projection_operands<M: Backend>(
    x: &Tensor<M, 2>,
    nf4: &[Option<Nf4Tensor>],
    track: bool,
) -> (Vec<Operands<M>>, Vec<(Tensor<M, 2>, Tensor<M, 2>)>) {
    let device = x.device();
    let [m, k] = x.dims();
    let tensor = |dims: [usize; 2], seed| {
        let data = TensorData::new(bf16_values(dims[0] * dims[1], seed), dims);
        Tensor::<M, 2>::from_data(data, &device)
    };
    let mut adapters = Vec::new();
    let operands = PROJECTIONS
        .iter()
        .zip(nf4)
        .zip(0u64..)
        .map(|(((n, _, r), q), i)| {
            let base = match q {
                Some(q) => BaseWeight::Nf4(q.to_device::<M>(&device)),
                None => BaseWeight::Dense(
                    burn::module::Param::from_tensor(tensor([*n, k], 10 + i))
                        .set_require_grad(false),
                ),
            };
            let lora = (*r > 0).then(|| {
                let (mut a, mut b) = (tensor([*r, k], 20 + i), tensor([*n, *r], 30 + i));
                if track {
                    (a, b) = (a.require_grad(), b.require_grad());
                }
                adapters.push((a.clone(), b.clone()));
                let mask = tensor([m, k], 40 + i).greater_elem(-0.8).float();
                LoraTerm {
                    input: x.clone() * mask.mul_scalar(1.25),
                    a,
                    b,
                    scale: 0.5,
                }
            });
            Operands { base, lora }
        })
        .collect();
    (operands, adapters)
}

/// The NF4 bases of `PROJECTIONS`, quantized once for both sides.
fn projection_nf4() -> Vec<Option<Nf4Tensor>> {
    PROJECTIONS
        .iter()
        .zip(0u64..)
        .map(|(&(n, nf4, _), i)| {
            nf4.then(|| {
                let values = bf16_values(n * PROJECTION_IN, 10 + i);
                Nf4Tensor::quantize(&values, [n, PROJECTION_IN], 64, true).unwrap()
            })
        })
        .collect()
}

/// Every output, then the gradients of x and of each adapter's A and B, of
/// `sum(Σ gᵢ · yᵢ)` on `M`.
fn projections_on<M: AutodiffBackend>(
    nf4: &[Option<Nf4Tensor>],
    device: &M::Device,
) -> Vec<Vec<f32>> {
    let data = TensorData::new(
        bf16_values(PROJECTION_ROWS * PROJECTION_IN, 1),
        [PROJECTION_ROWS, PROJECTION_IN],
    );
    let x = Tensor::<M, 2>::from_data(data, device).require_grad();
    let (operands, adapters) = projection_operands(&x, nf4, true);
    let ys = adapted_linears(x.clone(), operands);
    let loss = ys
        .iter()
        .zip(50u64..)
        .map(|(y, seed)| {
            let g = TensorData::new(bf16_values(y.dims().iter().product(), seed), y.dims());
            (y.clone() * Tensor::from_data(g, device)).sum()
        })
        .reduce(|a, b| a + b)
        .expect("three projections");
    let grads = loss.backward();
    let grad = |t: &Tensor<M, 2>| to_vec(t.grad(&grads).expect("an input of the loss"));
    let mut out: Vec<Vec<f32>> = ys.into_iter().map(to_vec).collect();
    out.push(grad(&x));
    for (a, b) in &adapters {
        out.extend([grad(a), grad(b)]);
    }
    out
}

/// The cuBLAS projections (bf16, dense and NF4 bases, with and without adapters, with and
/// without autodiff) against burn's matmuls on the CPU in f32: outputs, and the gradients of x
/// and of every A and B.
fn check_projections(device: &burn::backend::cuda::CudaDevice) {
    type Gpu = tigerflow_llm::backend::CudaBackend<tigerflow_llm::backend::bf16>;
    assert!(
        tigerflow_llm::cuda::has_cublas(device.index),
        "cuBLAS did not load"
    );
    let outer: usize = PROJECTIONS.iter().map(|(n, _, _)| n).sum();
    assert!(
        PROJECTION_ROWS * PROJECTION_IN * outer >= tigerflow_llm::cuda::CUBLAS_MIN_MACS,
        "the checked projections must be large enough to take cuBLAS"
    );
    let nf4 = projection_nf4();
    let cpu = projections_on::<Autodiff<CpuBackend>>(&nf4, &Default::default());
    let gpu = projections_on::<Autodiff<Gpu>>(&nf4, device);
    let outputs = PROJECTIONS.len();
    assert_eq!(gpu.len(), cpu.len());
    for (i, (gpu, cpu)) in gpu.iter().zip(&cpu).enumerate() {
        let limit = if i < outputs { VALUE_TOL } else { GRAD_TOL };
        let rel = max_rel(gpu, cpu);
        assert!(
            rel <= limit,
            "result {i} differs from the CPU's (max rel {rel})"
        );
    }
    let data = TensorData::new(
        bf16_values(PROJECTION_ROWS * PROJECTION_IN, 1),
        [PROJECTION_ROWS, PROJECTION_IN],
    );
    let x = Tensor::<Gpu, 2>::from_data(data, device);
    let (operands, _) = projection_operands(&x, &nf4, false);
    for (i, y) in adapted_linears(x, operands).into_iter().enumerate() {
        let rel = max_rel(&to_vec(y), &cpu[i]);
        assert!(rel <= VALUE_TOL, "inference output {i} (max rel {rel})");
    }
}

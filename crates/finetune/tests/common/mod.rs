//! Helpers shared by the trainer tests: tiny models and fixture readers.
#![allow(dead_code)]

#[cfg(feature = "cuda")]
pub(crate) mod gpu;

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use tigerflow_distributed::collective::{Alone, Collective};
use tigerflow_finetune::adamw::AdamW;
use tigerflow_finetune::adamw::AdamWConfig;
use tigerflow_finetune::metrics::MetricsLine;
use tigerflow_finetune::packing::Row;
use tigerflow_finetune::packing::{Batch, IGNORE};
use tigerflow_finetune::packing::{Padding, collate, pack};
use tigerflow_finetune::plan::Plan;
use tigerflow_finetune::schedule::LrScheduler;
use tigerflow_finetune::schedule::Schedule;
use tigerflow_finetune::step::{eval_nll_sum, inference_model};
use tigerflow_finetune::trainer::Settings;
use tigerflow_finetune::trainer::{
    Accumulated, accumulate, adapter_tensors, apply_flat_update, flat_gradient,
};
use tigerflow_finetune::trainer::{Observer, Outcome, TrainError, train};
use tigerflow_llm::adapters::attach_fresh;
use tigerflow_llm::adapters::{attach_peft, layer_adapters};
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::config::LlamaConfig;
use tigerflow_llm::linear::Projection;
use tigerflow_llm::lora::{ALL_LINEAR, LoraConfig};
use tigerflow_llm::model::Llama;
use tigerflow_llm::peft::{AdapterConfig, PeftAdapter};
use tigerflow_llm::safetensors_dir::SafetensorsDir;
use tigerflow_llm::weights::{load_llama, nf4 as quantize_nf4};

pub(crate) type B = Autodiff<CpuBackend>;

pub(crate) fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_tiny")
}

/// The tiny random Llama of the PEFT fixture, dense or NF4.
pub(crate) fn tiny_model(nf4: bool) -> Llama<B> {
    tiny_model_on::<B>(nf4, &Default::default())
}

/// [`tiny_model`] on any backend (the GPU tests compare backends).
pub(crate) fn tiny_model_on<M: Backend>(nf4: bool, device: &M::Device) -> Llama<M> {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config = LlamaConfig::from_json(&text, "config.json").unwrap();
    let mut source = SafetensorsDir::open(&dir).unwrap();
    let mut make = |_: &str, data: TensorData| {
        if nf4 {
            quantize_nf4(data, 64, true, device).unwrap()
        } else {
            Projection::new(Tensor::from_data(data, device))
        }
    };
    load_llama::<M>(&config, &mut source, device, &mut make).unwrap()
}

pub(crate) fn all_linear() -> Vec<String> {
    ALL_LINEAR.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn settings(dropout: f64) -> Settings {
    Settings {
        targets: all_linear(),
        lora: LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout,
        },
        micro_batch_size: 2,
        accumulation: 2,
        num_epochs: 1,
        max_steps: Some(6),
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        },
        max_grad_norm: 1.0,
        learning_rate: 1e-2,
        lr_scheduler: LrScheduler::Cosine,
        warmup_steps: 2,
        eval_steps: 3,
        logging_steps: 1,
        save_steps: 2,
        seed: 42,
        recompute: true,
        padding: Padding::longest(0),
    }
}

/// The plan of `rows` under `s`.
pub(crate) fn plan_of(rows: Vec<Row>, s: &Settings) -> Plan {
    Plan::new(
        rows,
        s.micro_batch_size,
        s.accumulation,
        s.num_epochs,
        s.max_steps,
        s.seed,
        s.padding,
    )
}

/// Discards the training loop's progress reports.
pub(crate) struct Quiet;

impl Observer for Quiet {
    fn started(&mut self, _: usize, _: usize) {}
    fn step_done(&mut self, _: &MetricsLine, _: usize) {}
    fn log(&mut self, _: &str) {}
}

/// Trains the tiny `model` on the CPU under `s`, writing into `out`, without progress output.
pub(crate) fn train_tiny(
    model: &mut Llama<B>,
    plan: &Plan,
    test_rows: &[Row],
    s: &Settings,
    out: &Path,
    stop_after: Option<usize>,
) -> Result<Outcome, TrainError> {
    train_tiny_as(&mut Alone, model, plan, test_rows, s, out, stop_after)
}

/// [`train_tiny`] as one rank of `collective`.
pub(crate) fn train_tiny_as(
    collective: &mut dyn Collective,
    model: &mut Llama<B>,
    plan: &Plan,
    test_rows: &[Row],
    s: &Settings,
    out: &Path,
    stop_after: Option<usize>,
) -> Result<Outcome, TrainError> {
    let config = AdapterConfig::lora("tiny", s.lora.r, s.lora.alpha, s.lora.dropout, &s.targets);
    train(
        model,
        plan,
        test_rows,
        s,
        &config,
        out,
        &Default::default(),
        collective,
        &mut Quiet,
        stop_after,
    )
}

/// The batch shape the checks pad to: on a GPU every new shape compiles new kernels, so one
/// shared shape keeps the GPU test set fast on a cold kernel cache.
pub(crate) const SHAPE: Padding = Padding {
    pad_id: 0,
    min_rows: 6,
    min_len: 64,
};

/// Random token samples (BOS = 1 … EOS = 2) of the tiny model's vocabulary.
pub(crate) fn samples(count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = 3 + (next() % 10) as usize;
            let mut s = vec![1];
            s.extend((0..len).map(|_| 3 + (next() % 61) as u32));
            s.push(2);
            s
        })
        .collect()
}

pub(crate) fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub(crate) fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub(crate) fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub(crate) fn to_vec<M: Backend, const D: usize>(t: Tensor<M, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

pub(crate) fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn batch(st: &SafeTensors<'_>, step: usize, micro: usize) -> Batch {
    let ids = i64s(st, &format!("step{step}.micro{micro}.input_ids"));
    let labels = i64s(st, &format!("step{step}.micro{micro}.labels"));
    let (rows, len) = (2, ids.len() / 2);
    // Right padding is a segment of its own, as HF's attention mask hides it.
    let mask = i64s(st, &format!("step{step}.micro{micro}.attention_mask"));
    let segment_ids = mask.iter().map(|&m| if m == 1 { 0 } else { -1 }).collect();
    Batch {
        rows,
        len,
        position_ids: (0..rows).flat_map(|_| 0..len as i64).collect(),
        target_tokens: labels.iter().filter(|&&l| l != IGNORE).count(),
        input_ids: ids,
        labels,
        segment_ids,
    }
}

/// Relative tolerances of [`check_peft_parity`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tolerances {
    pub loss: f64,
    pub grad: f32,
    pub norm: f64,
}

/// Ten optimizer steps of the tiny model on `device` against PEFT's losses, first-step
/// gradients, gradient norms and learning rates, within `tol`.
pub(crate) fn check_peft_parity<A: AutodiffBackend>(device: &A::Device, tol: Tolerances) {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut model = tiny_model_on::<A>(false, device);
    let adapter = PeftAdapter::load(&dir.join("adapter")).unwrap();
    assert_eq!(adapter.modules.len(), 14);
    attach_peft(&mut model, &adapter, device).unwrap();
    let targets = all_linear();
    let mut s = settings(0.0);
    s.adamw.weight_decay = 0.0;
    let mut optimizer = AdamW::new(s.adamw);
    let schedule = Schedule {
        kind: LrScheduler::Cosine,
        peak: 1e-2,
        warmup: 2,
        total: 10,
    };
    let losses = f64s(&st, "losses");
    let norms = f64s(&st, "grad_norms");
    let lrs = f64s(&st, "lrs");
    // Kept between updates as the trainer keeps it: later losses would drift from PEFT's if the
    // carried weights differed from the model's.
    let mut weights = None;
    for step in 0..10 {
        let batches = [batch(&st, step, 0), batch(&st, step, 1)];
        let acc = accumulate(&model, &targets, &batches, 0, step % 2 == 0, device);
        let loss = acc.loss();
        assert!(
            (loss - losses[step]).abs() / losses[step] < tol.loss,
            "step {step}: loss {loss} vs PEFT {}",
            losses[step]
        );
        assert!(
            (schedule.lr(step) - lrs[step]).abs() < 1e-12,
            "step {step}: lr"
        );
        if step == 0 {
            let names: Vec<String> = model
                .layers
                .iter()
                .enumerate()
                .flat_map(|(i, l)| layer_adapters(i, l, &targets).into_iter().map(|(n, _)| n))
                .collect();
            for (name, (ga, gb)) in names.iter().zip(&acc.grads) {
                let want_a = f32s(&st, &format!("grad.{name}.lora_A.weight"));
                let want_b = f32s(&st, &format!("grad.{name}.lora_B.weight"));
                assert!(
                    to_vec(ga.clone()).iter().all(|g| *g == 0.0)
                        && want_a.iter().all(|g| *g == 0.0),
                    "{name}: lora_A grad is zero while B = 0"
                );
                let rel = max_rel(&to_vec(gb.clone()), &want_b);
                assert!(
                    rel < tol.grad,
                    "{name}: lora_B grad differs (max rel {rel})"
                );
            }
        }
        let adapters = adapter_tensors(&mut model, &targets);
        let grad = flat_gradient(&adapters.0, acc.grads, device);
        let norm = apply_flat_update(
            &mut model,
            &targets,
            &mut optimizer,
            adapters,
            &mut weights,
            grad,
            schedule.lr(step),
            1.0,
        );
        assert!(
            (norm - norms[step]).abs() / norms[step] < tol.norm,
            "step {step}: grad norm {norm} vs {}",
            norms[step]
        );
    }
}

/// The tiny model (dense or NF4) with fresh adapters whose lora_A varies (lora_B is zero), with
/// adapter dropout `dropout`.
pub(crate) fn model_with_adapters<A: Backend>(
    nf4: bool,
    dropout: f64,
    device: &A::Device,
) -> Llama<A> {
    let mut model = tiny_model_on::<A>(nf4, device);
    let mut x = 0.1f32;
    // Non-zero lora_B would need an optimizer step; a varied lora_A is enough to route gradients.
    attach_fresh(
        &mut model,
        &all_linear(),
        &settings(dropout).lora,
        || {
            x = (x * 7.3).fract();
            x
        },
        device,
    );
    model
}

/// Layer-wise recompute gives the loss and gradients of the full graph with dropout on (within
/// `loss_tol` and `grad_tol`, relative), and another seed draws other dropout masks.
pub(crate) fn check_recompute<A: AutodiffBackend>(
    device: &A::Device,
    loss_tol: f64,
    grad_tol: f32,
) {
    let model = model_with_adapters::<A>(true, 0.2, device);
    let batch = collate(&pack(&samples(5, 1), 40, true).rows, SHAPE);
    let targets = all_linear();
    let one = std::slice::from_ref(&batch);
    let full = accumulate(&model, &targets, one, 11, false, device);
    let recomputed = accumulate(&model, &targets, one, 11, true, device);
    let loss_rel = (full.loss() - recomputed.loss()).abs() / full.loss();
    assert!(loss_rel < loss_tol, "loss (rel {loss_rel})");
    for ((fa, fb), (ra, rb)) in full.grads.iter().zip(&recomputed.grads) {
        for (f, r) in [(fa, ra), (fb, rb)] {
            let rel = max_rel(&to_vec(r.clone()), &to_vec(f.clone()));
            assert!(rel <= grad_tol, "grads differ (max rel {rel})");
        }
    }
    // lora_B starts at zero, so dropout shows in the gradients of B, not yet in the loss.
    let again = accumulate(&model, &targets, one, 12, true, device);
    let differs = again
        .grads
        .iter()
        .zip(&full.grads)
        .any(|((_, a), (_, b))| to_vec(a.clone()) != to_vec(b.clone()));
    assert!(differs, "another seed draws other dropout masks");
}

fn mean_loss<A: AutodiffBackend>(model: &Llama<A>, batches: &[Batch], device: &A::Device) -> f64 {
    let inner = inference_model(model);
    let nll: f64 = batches
        .iter()
        .map(|b| eval_nll_sum(&inner, b, device))
        .sum();
    nll / batches.iter().map(|b| b.target_tokens).sum::<usize>() as f64
}

/// Packing samples into shared rows changes neither the loss nor the gradients, and neither does
/// padding to a fixed shape (within `tol`).
pub(crate) fn check_packing<A: AutodiffBackend>(device: &A::Device, tol: f64) {
    let model = model_with_adapters::<A>(false, 0.0, device);
    let data = samples(6, 3);
    let packed = pack(&data, 48, true);
    let unpacked = pack(&data, 48, false);
    assert!(
        packed.rows.len() < unpacked.rows.len() && unpacked.rows.len() <= SHAPE.min_rows,
        "the samples must share rows, and fit the test shape unpacked"
    );
    let packed = collate(&packed.rows, SHAPE);
    let unpacked = collate(&unpacked.rows, SHAPE);
    let a = mean_loss(&model, std::slice::from_ref(&packed), device);
    let b = mean_loss(&model, std::slice::from_ref(&unpacked), device);
    assert!((a - b).abs() / b < tol, "packed {a} vs unpacked {b}");
    let targets = all_linear();
    let grads = |batch: &Batch| {
        accumulate(
            &model,
            &targets,
            std::slice::from_ref(batch),
            0,
            false,
            device,
        )
    };
    let ga = grads(&packed);
    assert_same(&ga, &grads(&unpacked), "packed vs unpacked", tol);
    let tight = collate(&pack(&data, 48, true).rows, Padding::longest(0));
    assert!(tight.len < SHAPE.min_len, "padding must add columns");
    assert_same(&ga, &grads(&tight), "padded to the test shape vs not", tol);
}

fn assert_same<A: AutodiffBackend>(a: &Accumulated<A>, b: &Accumulated<A>, what: &str, tol: f64) {
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    assert!(
        (a.loss() - b.loss()).abs() / b.loss() < tol,
        "{what}: loss {} vs {}",
        a.loss(),
        b.loss()
    );
    for (i, ((a_a, a_b), (b_a, b_b))) in a.grads.iter().zip(&b.grads).enumerate() {
        for (x, y) in [(a_a, b_a), (a_b, b_b)] {
            let rel = max_rel(&to_vec(x.clone()), &to_vec(y.clone()));
            assert!(
                f64::from(rel) <= tol,
                "{what}: adapter {i} grads differ (max rel {rel})"
            );
        }
    }
}

/// One micro-batch of four rows and four micro-batches of one row give the same step.
pub(crate) fn check_accumulation<A: AutodiffBackend>(device: &A::Device, tol: f64) {
    let model = model_with_adapters::<A>(false, 0.0, device);
    let rows = pack(&samples(4, 9), 16, false).rows;
    assert_eq!(rows.len(), 4);
    let targets = all_linear();
    let singles: Vec<Batch> = rows
        .iter()
        .map(|r| collate(std::slice::from_ref(r), SHAPE))
        .collect();
    let mb1_ga4 = accumulate(&model, &targets, &singles, 0, false, device);
    let mb4_ga1 = accumulate(&model, &targets, &[collate(&rows, SHAPE)], 0, false, device);
    assert_same(&mb1_ga4, &mb4_ga1, "mb=1×ga=4 vs mb=4×ga=1", tol);
}

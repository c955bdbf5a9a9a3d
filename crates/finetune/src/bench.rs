//! `tigerflow bench train`: the steady-state speed of QLoRA training on a named model shape with
//! random weights (no download), with the same code path as the `train` stage.
//!
//! A measured step runs the step's micro-batches (forward and backward), clips and applies AdamW,
//! exactly as training does; its time is the step time behind tokens/s. The breakdown needs one
//! more forward per step, run on its own and not counted: forward = that pass, backward = the
//! micro-batch time minus it (with recompute, backward therefore includes the recomputed
//! forward, as in PyTorch profiles of gradient checkpointing), data = building and uploading the
//! batch tensors. Every phase ends with a device sync, so the times are wall-clock GPU times.
//!
//! With several ranks (`--device cuda:0,cuda:1`) each rank runs its share of every step's
//! micro-batches and the gradients are summed as in training; all-reduce is that sum's time,
//! and tokens/s counts the tokens of all ranks.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;
use tigerflow_llm::adapters::attach_fresh;
use tigerflow_llm::config::LlamaConfig;
use tigerflow_llm::linear::Projection;
use tigerflow_llm::lora::{ALL_LINEAR, LoraConfig};
use tigerflow_llm::loss::head_nll_sum;
use tigerflow_llm::model::Llama;
use tigerflow_llm::weights::{WeightError, WeightSource, load_llama, nf4};

use crate::adamw::{AdamW, AdamWConfig};
use crate::packing::{Batch, Padding, collate, pack};
use crate::step::BatchTensors;
use crate::trainer::{
    accumulate_shard, adapter_tensors, apply_flat_update, flat_gradient, sum_over_ranks,
};
use tigerflow_distributed::collective::{Collective, Shard};

/// Model shapes the benchmark can build, by the name of the model they copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ModelShape {
    /// Two small layers: for tests of the benchmark itself.
    Tiny,
    /// HuggingFaceTB/SmolLM2-135M (the default pipeline's base model).
    Smollm2_135m,
    /// meta-llama/Llama-2-7b-hf (the reference workflow's base model).
    Llama2_7b,
}

impl ModelShape {
    pub const NAMES: [&'static str; 3] = ["tiny", "smollm2-135m", "llama2-7b"];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "tiny" => Ok(ModelShape::Tiny),
            "smollm2-135m" => Ok(ModelShape::Smollm2_135m),
            "llama2-7b" => Ok(ModelShape::Llama2_7b),
            other => Err(format!(
                "unknown model shape {other:?}; fix: use one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn config(self) -> LlamaConfig {
        // (vocab, hidden, intermediate, layers, heads, kv heads, rope theta, tied)
        let (vocab, hidden, inter, layers, heads, kv, theta, tied) = match self {
            ModelShape::Tiny => (256, 64, 128, 2, 4, 2, 10_000.0, true),
            ModelShape::Smollm2_135m => (49_152, 576, 1536, 30, 9, 3, 100_000.0, true),
            ModelShape::Llama2_7b => (32_000, 4096, 11_008, 32, 32, 32, 10_000.0, false),
        };
        LlamaConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-5,
            rope_theta: theta,
            rope_scaling: None,
            max_position_embeddings: 4096,
            tie_word_embeddings: tied,
            bos_token_id: Some(1),
            eos_token_id: vec![2],
        }
    }
}

/// Parameters that take part in matrix products per token: every projection and the output
/// head (embedding lookups cost no FLOPs). The `N` of the 6N / 4N rule.
pub fn matmul_params(c: &LlamaConfig) -> u64 {
    let (h, q, kv, i) = (
        c.hidden_size as u64,
        (c.num_attention_heads * c.head_dim) as u64,
        (c.num_key_value_heads * c.head_dim) as u64,
        c.intermediate_size as u64,
    );
    let layer = h * q + 2 * h * kv + q * h + 3 * h * i;
    c.num_hidden_layers as u64 * layer + c.vocab_size as u64 * h
}

/// Random weights in the shapes `config` asks for: projections uniform with standard deviation
/// 0.02 (transformers' `initializer_range`), norms at one.
struct RandomWeights {
    config: LlamaConfig,
    seed: u64,
}

impl RandomWeights {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let c = &self.config;
        let (h, q, kv, i) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        let suffix = name.rsplit('.').nth(1)?;
        Some(match suffix {
            "embed_tokens" | "lm_head" => vec![c.vocab_size, h],
            "q_proj" => vec![q, h],
            "k_proj" | "v_proj" => vec![kv, h],
            "o_proj" => vec![h, q],
            "gate_proj" | "up_proj" => vec![i, h],
            "down_proj" => vec![h, i],
            "input_layernorm" | "post_attention_layernorm" | "norm" => vec![h],
            _ => return None,
        })
    }
}

impl WeightSource for RandomWeights {
    fn describe(&self) -> String {
        "random weights".into()
    }

    fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    fn read(&mut self, name: &str) -> Result<TensorData, WeightError> {
        let shape = self.shape(name).ok_or_else(|| WeightError::Missing {
            source_name: self.describe(),
            name: name.to_owned(),
        })?;
        let len: usize = shape.iter().product();
        self.seed += 1;
        let values = if shape.len() == 1 {
            vec![1.0f32; len]
        } else {
            random_uniform(len, 0.02 * 3f32.sqrt(), self.seed)
        };
        Ok(TensorData::new(values, shape))
    }
}

/// `len` values uniform in `[-bound, bound)`, generated in parallel chunks (a 7B model has
/// 6.7 billion of them) and reproducible from `seed`.
fn random_uniform(len: usize, bound: f32, seed: u64) -> Vec<f32> {
    const CHUNK: usize = 1 << 20;
    let mut values = vec![0f32; len];
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9) ^ k as u64);
            chunk
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-bound..bound));
        });
    values
}

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSettings {
    pub shape: ModelShape,
    pub sequence_len: usize,
    pub micro_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub load_in_4bit: bool,
    pub gradient_checkpointing: bool,
    /// Data-parallel ranks; each runs `gradient_accumulation_steps` micro-batches per step.
    pub ranks: usize,
    /// Steps run before measuring (the first one compiles kernels on a GPU).
    pub warmup_steps: usize,
    pub steps: usize,
}

/// Mean milliseconds per optimizer step, by phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Breakdown {
    pub data_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Summing the gradients over the ranks (zero for one rank).
    pub all_reduce_ms: f64,
    pub optimizer_ms: f64,
}

/// What a benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub settings: BenchSettings,
    pub backend: String,
    pub matmul_params: u64,
    pub tokens_per_step: usize,
    pub load_s: f64,
    pub first_step_s: f64,
    pub step_ms: f64,
    pub tokens_per_s: f64,
    pub breakdown: Breakdown,
    /// Device memory held by the allocator after the run (CUDA only).
    pub peak_reserved_bytes: Option<u64>,
    /// Model FLOPs per token: 4N for LoRA (no weight gradients of the base), 6N with recompute.
    pub flops_per_token: f64,
    pub loss_first: f64,
    pub loss_last: f64,
}

impl BenchReport {
    /// Model FLOPs utilisation against a peak of `peak_tflops`.
    pub fn mfu(&self, peak_tflops: f64) -> f64 {
        self.tokens_per_s * self.flops_per_token / (peak_tflops * 1e12)
    }
}

/// Micro-batches of `rows` packed rows of `sequence_len` tokens, from random samples of 1/16 to
/// 1/2 of a row, so that packing (and its block-diagonal mask) is exercised as in training.
fn batches(settings: &BenchSettings, vocab: usize, seed: u64) -> Vec<Batch> {
    let len = settings.sequence_len;
    let wanted = settings.micro_batch_size * settings.gradient_accumulation_steps * settings.ranks;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut samples = Vec::new();
    let mut rows = Vec::new();
    while rows.len() < wanted {
        let n = rng.random_range((len / 16).max(2)..=(len / 2).max(2));
        samples.push((0..n).map(|_| rng.random_range(3..vocab as u32)).collect());
        rows = pack(&samples, len, true).rows;
    }
    // Packing is first fit: full rows come first, the last ones may still have room.
    rows.truncate(wanted);
    rows.chunks(settings.micro_batch_size)
        .map(|chunk| collate(chunk, Padding::fixed(0, settings.micro_batch_size, len)))
        .collect()
}

/// Waits for `device`, then fails if a device thread panicked meanwhile (out of memory, say):
/// the step's numbers would be meaningless.
fn synced<B: Backend>(device: &B::Device) -> Result<(), String> {
    B::sync(device).map_err(|e| format!("{e:?}"))?;
    tigerflow_llm::failure::check()
        .map_err(|f| format!("{f}; fix: lower --micro-batch-size or --sequence-len"))
}

fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// Builds the model and runs the benchmark on `device` as `collective`'s rank; `reserved` reads
/// the device memory held.
pub fn run<B: AutodiffBackend>(
    settings: &BenchSettings,
    device: &B::Device,
    collective: &mut dyn Collective,
    reserved: impl Fn() -> Option<u64>,
) -> Result<BenchReport, String> {
    let config = settings.shape.config();
    let started = Instant::now();
    let mut source = RandomWeights {
        config: config.clone(),
        seed: 42,
    };
    let mut make = |_: &str, data: TensorData| {
        if settings.load_in_4bit {
            nf4(data, 64, true, device).expect("random weights are finite")
        } else {
            Projection::new(Tensor::from_data(data, device))
        }
    };
    let mut model: Llama<B> =
        load_llama(&config, &mut source, device, &mut make).map_err(|e| e.to_string())?;
    let targets: Vec<String> = ALL_LINEAR.iter().map(|s| s.to_string()).collect();
    let lora = LoraConfig {
        r: settings.lora_r,
        alpha: settings.lora_alpha,
        dropout: settings.lora_dropout,
    };
    let mut rng = StdRng::seed_from_u64(7);
    attach_fresh(&mut model, &targets, &lora, || rng.random(), device);
    B::sync(device).map_err(|e| format!("{e:?}"))?;
    let load_s = seconds_since(started);

    let micro = batches(settings, config.vocab_size, 11);
    let tokens_per_step: usize = micro.iter().map(|b| b.rows * b.len).sum();
    let shard = Shard::of(collective);
    let own: Vec<Batch> = micro
        .iter()
        .enumerate()
        .filter(|(j, _)| shard.owns(*j))
        .map(|(_, b)| b.clone())
        .collect();
    let mut optimizer = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
    });
    let mut weights = None;
    let sync = || synced::<B>(device);
    // Seconds of the micro-batches, the all-reduce and the optimizer, and the step's loss.
    let mut step = |model: &mut Llama<B>, index: usize| -> Result<[f64; 4], String> {
        let t = Instant::now();
        let acc = accumulate_shard(
            model,
            &targets,
            &micro,
            shard,
            index as u64,
            settings.gradient_checkpointing,
            device,
        );
        sync()?;
        let micro_s = seconds_since(t);
        // The optimizer's time is the update's, around the all-reduce timed on its own.
        let t = Instant::now();
        let adapters = adapter_tensors(model, &targets);
        let grad = flat_gradient(&adapters.0, acc.grads, device);
        sync()?;
        let r = Instant::now();
        let (grad, nll_sum) =
            sum_over_ranks(collective, grad, acc.nll_sum).map_err(|e| e.to_string())?;
        sync()?;
        let reduce_s = seconds_since(r);
        apply_flat_update(
            model,
            &targets,
            &mut optimizer,
            adapters,
            &mut weights,
            grad,
            2e-4,
            1.0,
        );
        sync()?;
        let loss = nll_sum / acc.tokens.max(1) as f64;
        Ok([micro_s, reduce_s, seconds_since(t) - reduce_s, loss])
    };

    let t = Instant::now();
    let [_, _, _, loss_first] = step(&mut model, 0)?;
    let first_step_s = seconds_since(t);
    for i in 1..settings.warmup_steps {
        step(&mut model, i)?;
    }
    let mut total = Breakdown::default();
    let mut loss_last = loss_first;
    let mut measured_s = 0.0;
    for i in 0..settings.steps {
        let [micro_s, reduce_s, optimizer_s, loss] = step(&mut model, settings.warmup_steps + i)?;
        measured_s += micro_s + reduce_s + optimizer_s;
        loss_last = loss;
        let (data_s, forward_s) =
            forward_only(&model, &own, settings.gradient_checkpointing, device)?;
        total.data_ms += data_s * 1e3;
        total.forward_ms += forward_s * 1e3;
        total.backward_ms += (micro_s - forward_s - data_s).max(0.0) * 1e3;
        total.all_reduce_ms += reduce_s * 1e3;
        total.optimizer_ms += optimizer_s * 1e3;
    }
    let n = settings.steps.max(1) as f64;
    let step_ms = measured_s * 1e3 / n;
    let params = matmul_params(&config);
    let per_token = if settings.gradient_checkpointing {
        6.0
    } else {
        4.0
    };
    Ok(BenchReport {
        settings: settings.clone(),
        backend: B::name(device),
        matmul_params: params,
        tokens_per_step,
        load_s,
        first_step_s,
        step_ms,
        tokens_per_s: tokens_per_step as f64 / (step_ms / 1e3),
        breakdown: Breakdown {
            data_ms: total.data_ms / n,
            forward_ms: total.forward_ms / n,
            backward_ms: total.backward_ms / n,
            all_reduce_ms: total.all_reduce_ms / n,
            optimizer_ms: total.optimizer_ms / n,
        },
        peak_reserved_bytes: reserved(),
        flops_per_token: per_token * params as f64,
        loss_first,
        loss_last,
    })
}

/// Seconds to build and upload the batch tensors, and seconds of the forward pass with its loss,
/// summed over the micro-batches, as the training step runs it: with `recompute` the adapters
/// are frozen, so nothing is recorded (the step's first pass); without it the graph is recorded
/// and then consumed by an untimed backward pass. A recorded graph left unconsumed stays in
/// memory until the next backward pass (62 GiB at the 7B shape).
fn forward_only<B: AutodiffBackend>(
    model: &Llama<B>,
    micro: &[Batch],
    recompute: bool,
    device: &B::Device,
) -> Result<(f64, f64), String> {
    let sync = || synced::<B>(device);
    let model = if recompute {
        model.clone().no_grad()
    } else {
        model.clone()
    };
    let (mut data_s, mut forward_s) = (0.0, 0.0);
    for batch in micro {
        let t = Instant::now();
        let tensors = BatchTensors::<B>::new(batch, device);
        sync()?;
        data_s += seconds_since(t);
        let t = Instant::now();
        let normed = model.forward_hidden(
            tensors.input_ids,
            tensors.position_ids,
            Some(tensors.segment_ids),
        );
        let loss = head_nll_sum(&model, normed, tensors.labels, tensors.weights);
        sync()?;
        forward_s += seconds_since(t);
        if !recompute {
            let _ = loss.backward();
        }
    }
    Ok((data_s, forward_s))
}

/// The report as an aligned table for the terminal.
pub fn table(report: &BenchReport, peak_tflops: Option<f64>) -> String {
    let s = &report.settings;
    let b = &report.breakdown;
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let mut lines = vec![
        format!("shape               {:?}", s.shape),
        format!("backend             {}", report.backend),
        format!(
            "batch               {} rows x {} tokens x {} micro-batches x {} ranks, LoRA r={} on all linear, 4-bit={}, recompute={}",
            s.micro_batch_size,
            s.sequence_len,
            s.gradient_accumulation_steps,
            s.ranks,
            s.lora_r,
            s.load_in_4bit,
            s.gradient_checkpointing
        ),
        format!("load                {:.1} s", report.load_s),
        format!("first step          {:.1} s", report.first_step_s),
        format!(
            "step                {:.1} ms  ({} steps measured after {} warm-up)",
            report.step_ms, s.steps, s.warmup_steps
        ),
        format!("tokens/s            {:.0}", report.tokens_per_s),
        format!(
            "breakdown           data {:.1} ms, forward {:.1} ms, backward {:.1} ms, all-reduce {:.1} ms, optimizer {:.1} ms",
            b.data_ms, b.forward_ms, b.backward_ms, b.all_reduce_ms, b.optimizer_ms
        ),
        format!(
            "loss                {:.4} -> {:.4}",
            report.loss_first, report.loss_last
        ),
    ];
    if let Some(bytes) = report.peak_reserved_bytes {
        lines.push(format!(
            "device memory       {:.2} GiB reserved",
            gib(bytes)
        ));
    }
    if let Some(peak) = peak_tflops {
        lines.push(format!(
            "MFU                 {:.1} % of {peak} TFLOP/s ({:.0}N FLOPs/token, N = {:.1}M)",
            100.0 * report.mfu(peak),
            report.flops_per_token / report.matmul_params as f64,
            report.matmul_params as f64 / 1e6
        ));
    }
    lines.join("\n")
}

/// Runs [`run`] on whichever backend `device::run_on` chooses.
pub struct BenchTask<'a> {
    pub settings: &'a BenchSettings,
    pub spec: tigerflow_llm::device::DeviceSpec,
    pub collective: &'a mut dyn Collective,
}

impl tigerflow_llm::device::OnBackend for BenchTask<'_> {
    type Output = Result<BenchReport, String>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let spec = self.spec;
        run::<burn::backend::Autodiff<B>>(self.settings, &device, self.collective, || {
            tigerflow_llm::device::reserved_bytes(spec)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tigerflow_llm::backend::CpuBackend;

    #[test]
    fn shapes_have_the_published_parameter_counts() {
        // SmolLM2-135M: 134.5M parameters, of which 28.3M embedding (tied, so counted once here
        // as the output head). Llama-2-7B: 6.74B, of which 131M input embedding.
        let smol = matmul_params(&ModelShape::Smollm2_135m.config());
        assert_eq!(smol, 134_515_008 - 576 * 61);
        let llama = matmul_params(&ModelShape::Llama2_7b.config());
        assert_eq!(llama, 6_738_415_616 - 32_000 * 4096 - 4096 * 65);
        assert!(ModelShape::parse("gpt2").unwrap_err().contains("llama2-7b"));
    }

    #[test]
    fn benchmark_runs_and_learns_on_the_cpu() {
        let settings = BenchSettings {
            shape: ModelShape::Tiny,
            sequence_len: 64,
            micro_batch_size: 2,
            gradient_accumulation_steps: 2,
            lora_r: 4,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            load_in_4bit: true,
            gradient_checkpointing: true,
            ranks: 1,
            warmup_steps: 1,
            steps: 2,
        };
        let report = run::<burn::backend::Autodiff<CpuBackend>>(
            &settings,
            &Default::default(),
            &mut tigerflow_distributed::collective::Alone,
            || None,
        )
        .unwrap();
        // Four packed rows of at most 64 tokens; first fit leaves little room in any of them.
        assert!(
            (3 * 64..=4 * 64).contains(&report.tokens_per_step),
            "{report:?}"
        );
        assert!(report.tokens_per_s > 0.0 && report.step_ms > 0.0);
        assert!(report.breakdown.forward_ms > 0.0 && report.breakdown.optimizer_ms > 0.0);
        assert!(report.loss_first.is_finite() && report.loss_last.is_finite());
        // Uniform random tokens over a 253-token range: the initial loss is about ln(256).
        assert!((report.loss_first - 256f64.ln()).abs() < 0.5, "{report:?}");
        let text = table(&report, Some(1.0));
        assert!(text.contains("tokens/s") && text.contains("MFU"), "{text}");
    }
}

//! `uses = "train"`: QLoRA fine-tuning of the base model on the `split` stage's output.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde_json::json;
use tigerflow_distributed::collective::{Alone, Collective};
use tigerflow_finetune::adamw::AdamWConfig;
use tigerflow_finetune::base::{BaseSpec, LoadedBase, is_local, load_base};
use tigerflow_finetune::data::{read_texts, wrap};
use tigerflow_finetune::metrics::{MetricsLine, read};
use tigerflow_finetune::packing::{Padding, pack};
use tigerflow_finetune::plan::Plan;
use tigerflow_finetune::plot::write_curves;
use tigerflow_finetune::trainer::{Observer, Outcome, Settings, TrainError, train};
use tigerflow_llm::device::{DeviceSpec, OnBackend, gpu_cache_dir, run_on};
use tigerflow_llm::lora::LoraConfig;
use tigerflow_llm::peft::AdapterConfig;
use tigerflow_stage::{Context, InputSlot, Reporter, StageError, TypedStage};

use crate::launch::launch;
use crate::model_card::model_card;
use crate::params::TrainParams;

pub struct TrainStage;

const INPUTS: &[InputSlot] = &[InputSlot {
    name: "data",
    required: true,
    help: "the split stage's output: a directory with train.jsonl and test.jsonl",
}];

impl TypedStage for TrainStage {
    const KIND: &'static str = "train";
    /// 2: clipping sums the squared gradient over one flat vector (another rounding order).
    const CODE_VERSION: u32 = 2;
    const INPUTS: &'static [InputSlot] = INPUTS;
    const RESUMABLE: bool = true;
    type Params = TrainParams;

    fn outputs(&self, _params: &TrainParams) -> Vec<PathBuf> {
        [
            "adapter/adapter_model.safetensors",
            "adapter/adapter_config.json",
            "adapter/README.md",
            "metrics.jsonl",
            "loss.svg",
            "lr.svg",
            "train_report.json",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect()
    }

    fn extra_dependencies(&self, params: &TrainParams) -> Vec<PathBuf> {
        if is_local(&params.base_model) {
            vec![PathBuf::from(&params.base_model)]
        } else {
            Vec::new()
        }
    }

    fn run(&self, params: &TrainParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        if params.distributed() {
            return launch(params, ctx);
        }
        let spec = DeviceSpec::parse(params.host_devices()[0])
            .map_err(|e| StageError::Failed(e.to_string()))?;
        train_as_rank(params, ctx, spec, &mut Alone)
    }
}

/// Trains on `spec` as `collective`'s rank: the whole stage when alone, one replica of a
/// data-parallel run otherwise (`rank.rs`). Rank 0 writes the outputs.
pub(crate) fn train_as_rank(
    params: &TrainParams,
    ctx: &mut Context<'_>,
    spec: DeviceSpec,
    collective: &mut dyn Collective,
) -> Result<(), StageError> {
    let cache_dir = ctx.cache_dir;
    let stage = ctx.stage_name;
    let training = Training {
        params,
        ctx,
        spec,
        collective,
    };
    run_on(spec, params.bf16, cache_dir, training)
        .map_err(|m| StageError::Failed(format!("stage `{stage}`: {m}")))?
}

/// The stage's work, for whichever backend `device` selects.
struct Training<'p, 'c, 'r, 'k> {
    params: &'p TrainParams,
    ctx: &'c mut Context<'r>,
    spec: DeviceSpec,
    collective: &'k mut dyn Collective,
}

impl OnBackend for Training<'_, '_, '_, '_> {
    type Output = Result<(), StageError>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        train_on::<Autodiff<B>>(self.params, self.ctx, self.spec, device, self.collective)
    }
}

/// Reports training progress on the stage's progress line.
struct Progress<'a> {
    reporter: &'a dyn Reporter,
    /// Shown until the first step is done (which compiles the GPU kernels on a cold cache).
    first_step_note: Option<String>,
    /// When and at which step the first step of this attempt ended: the ETA counts from there,
    /// so that kernel compilation in step one does not inflate it.
    first_done: Option<(Instant, usize)>,
}

impl Observer for Progress<'_> {
    fn started(&mut self, total_steps: usize, resumed_at: usize) {
        self.reporter
            .begin("training", Some(total_steps as u64), "steps");
        self.reporter.set_position(resumed_at as u64);
        if let Some(note) = &self.first_step_note {
            self.reporter.set_message(note);
        }
    }

    fn step_done(&mut self, line: &MetricsLine, total_steps: usize) {
        self.reporter.set_position(line.step as u64);
        let (since, at) = *self.first_done.get_or_insert((Instant::now(), line.step));
        let eta = match line.step - at {
            0 => String::from("…"),
            done => format_eta(
                since.elapsed().as_secs_f64() / done as f64 * (total_steps - line.step) as f64,
            ),
        };
        self.reporter.set_message(&format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s ETA {eta}",
            line.loss.unwrap_or(f64::NAN),
            line.lr.unwrap_or(0.0),
            line.tokens_per_s.unwrap_or(0.0),
        ));
    }

    fn log(&mut self, line: &str) {
        self.reporter.log(line);
    }
}

fn format_eta(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The loop's settings. An optimizer step has `gradient_accumulation_steps` micro-batches per
/// rank; every rank plans the whole step and computes its share.
fn settings(params: &TrainParams, pad_id: u32) -> Settings {
    Settings {
        targets: params.target_modules(),
        lora: LoraConfig {
            r: params.lora_r,
            alpha: params.lora_alpha,
            dropout: params.lora_dropout,
        },
        micro_batch_size: params.micro_batch_size,
        accumulation: params.gradient_accumulation_steps * params.world_size(),
        num_epochs: params.num_epochs,
        max_steps: params.max_steps,
        adamw: AdamWConfig {
            beta1: params.adam_beta1,
            beta2: params.adam_beta2,
            epsilon: params.adam_epsilon,
            weight_decay: params.weight_decay,
        },
        max_grad_norm: params.max_grad_norm,
        learning_rate: params.learning_rate,
        lr_scheduler: params.lr_scheduler,
        warmup_steps: params.warmup_steps,
        eval_steps: params.eval_steps,
        logging_steps: params.logging_steps,
        save_steps: params.save_every().max(1),
        seed: params.seed,
        recompute: params.gradient_checkpointing,
        padding: Padding::to_sequence_len(
            pad_id,
            params.pad_to_sequence_len,
            params.micro_batch_size,
            params.sequence_len,
        ),
    }
}

fn split_file(dir: &Path, name: &str) -> PathBuf {
    if dir.is_file() {
        dir.to_owned()
    } else {
        dir.join(name)
    }
}

fn train_on<B: AutodiffBackend>(
    params: &TrainParams,
    ctx: &mut Context<'_>,
    spec: DeviceSpec,
    device: B::Device,
    collective: &mut dyn Collective,
) -> Result<(), StageError> {
    let data = ctx.input("data")?.to_owned();
    let LoadedBase {
        mut model,
        tokenizer,
        resolved,
    } = load_base::<B>(
        &BaseSpec {
            model: &params.base_model,
            load_in_4bit: params.load_in_4bit,
            double_quant: params.double_quant,
        },
        ctx,
        &device,
    )?;
    ctx.reporter
        .log(&format!("base model {} ({resolved})", params.base_model));
    let tokenize = |path: &Path| -> Result<Vec<Vec<u32>>, StageError> {
        read_texts(path)?
            .iter()
            .map(|text| {
                tokenizer
                    .encode(text)
                    .map(|ids| wrap(ids, tokenizer.bos, tokenizer.eos))
            })
            .collect()
    };
    let train_samples = tokenize(&split_file(&data, "train.jsonl"))?;
    let test_path = data.join("test.jsonl");
    let mut test_samples = if test_path.exists() {
        tokenize(&test_path)?
    } else {
        Vec::new()
    };
    if let Some(n) = params.max_eval_samples {
        test_samples.truncate(n);
    }
    let settings = settings(params, tokenizer.pad);
    let packed = pack(&train_samples, params.sequence_len, params.sample_packing);
    if packed.dropped > 0 {
        ctx.reporter.log(&format!(
            "{} of {} training samples are longer than sequence_len = {} tokens and were left out",
            packed.dropped,
            train_samples.len(),
            params.sequence_len
        ));
    }
    let rows = packed.rows.len();
    let test_rows = pack(&test_samples, params.sequence_len, params.sample_packing).rows;
    let plan = Plan::new(
        packed.rows,
        settings.micro_batch_size,
        settings.accumulation,
        settings.num_epochs,
        settings.max_steps,
        settings.seed,
        settings.padding,
    );
    let adapter_config = AdapterConfig::lora(
        &params.base_model,
        params.lora_r,
        params.lora_alpha,
        params.lora_dropout,
        &settings.targets,
    );
    let mut progress = Progress {
        reporter: ctx.reporter,
        first_step_note: match spec {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(_) => Some(format!(
                "step 1 compiles and autotunes GPU kernels (minutes on a cold cache; kept in {})",
                gpu_cache_dir(ctx.cache_dir).display()
            )),
        },
        first_done: None,
    };
    let outcome = train(
        &mut model,
        &plan,
        &test_rows,
        &settings,
        &adapter_config,
        ctx.out_dir,
        &device,
        collective,
        &mut progress,
        None,
    )
    .map_err(|e| match e {
        TrainError::Io { path, source } => StageError::io(path.display().to_string(), source),
        other => StageError::Failed(format!("stage `{}`: {other}", ctx.stage_name)),
    })?;
    if collective.rank() != 0 {
        return Ok(());
    }

    let adapter_dir = ctx.output("adapter");
    tigerflow_llm::adapters::export(&model, &settings.targets, adapter_config)
        .save(&adapter_dir)
        .map_err(|e| StageError::Failed(e.to_string()))?;
    let metrics = read(&ctx.output("metrics.jsonl"))
        .map_err(|e| StageError::io("reading metrics.jsonl", e))?;
    write_curves(ctx.out_dir, &metrics).map_err(StageError::Failed)?;
    let report = json!({
        "base_model": params.base_model,
        "base_model_resolved": resolved,
        "device": spec.to_string(),
        "devices": params.host_devices(),
        "ranks": params.world_size(),
        "compute_dtype": spec.dtype(params.bf16),
        "train_samples": train_samples.len(),
        "train_samples_dropped": packed.dropped,
        "train_rows": rows,
        "test_samples": test_samples.len(),
        "steps": outcome.steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "resumed_at_step": outcome.resumed_at,
        "tokens_seen": outcome.tokens_seen,
        "final_eval_loss": outcome.final_eval_loss,
        "final_train_loss": metrics.iter().rev().find_map(|l| l.loss),
        "params": params,
    });
    let report_path = ctx.output("train_report.json");
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&report).expect("report serializes"),
    )
    .map_err(|e| StageError::io(format!("writing {}", report_path.display()), e))?;
    let card = model_card(params, &report, &outcome_summary(&outcome));
    let card_path = adapter_dir.join("README.md");
    std::fs::write(&card_path, card)
        .map_err(|e| StageError::io(format!("writing {}", card_path.display()), e))
}

fn outcome_summary(outcome: &Outcome) -> String {
    match outcome.final_eval_loss {
        Some(loss) => format!(
            "{} optimizer steps; final test loss {loss:.4} (perplexity {:.2})",
            outcome.steps,
            loss.exp()
        ),
        None => format!("{} optimizer steps; no test split", outcome.steps),
    }
}

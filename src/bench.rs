//! `tigerflow bench train`: training speed on a named model shape with random weights, so that
//! numbers can be compared across machines and against the PyTorch reference
//! (`benches/gpu/peft_reference.py`) without downloading a model.

use std::path::PathBuf;

use tigerflow_llm::device::{DeviceSpec, run_on};
use tigerflow_train::bench::{BenchSettings, BenchTask, ModelShape, table};
use tigerflow_train::params::TrainParams;

/// Arguments of `tigerflow bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhat {
    /// Steady-state QLoRA training: tokens/s, step breakdown, device memory and MFU.
    Train(TrainBenchArgs),
}

/// Defaults are the `train` stage's (the reference QLoRA recipe) unless noted.
#[derive(Debug, clap::Args)]
pub struct TrainBenchArgs {
    /// Model shape: tiny, smollm2-135m or llama2-7b (random weights of that shape).
    #[arg(long, default_value = "smollm2-135m")]
    pub shape: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute in f32 on CUDA instead of bf16.
    #[arg(long)]
    pub f32: bool,
    /// Tokens per packed row.
    #[arg(long)]
    pub sequence_len: Option<usize>,
    /// Rows per micro-batch.
    #[arg(long)]
    pub micro_batch_size: Option<usize>,
    /// Micro-batches per optimizer step (default 1: the step time is what is measured).
    #[arg(long, default_value_t = 1)]
    pub gradient_accumulation_steps: usize,
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// Dense bf16/f32 base instead of NF4.
    #[arg(long)]
    pub no_4bit: bool,
    /// Keep every layer's activations instead of recomputing them in the backward pass.
    #[arg(long)]
    pub no_recompute: bool,
    /// Optimizer steps before measuring (the first compiles GPU kernels).
    #[arg(long, default_value_t = 2)]
    pub warmup_steps: usize,
    /// Optimizer steps measured.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// The device's dense peak in TFLOP/s for MFU (989 is an H100 SXM in bf16).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Runs the command; returns the process exit code.
pub fn run(args: &BenchArgs) -> i32 {
    match &args.what {
        BenchWhat::Train(a) => match bench_train(a) {
            Ok(()) => 0,
            Err(message) => {
                eprintln!("error: {message}");
                1
            }
        },
    }
}

fn bench_train(args: &TrainBenchArgs) -> Result<(), String> {
    let recipe = TrainParams::default();
    let settings = BenchSettings {
        shape: ModelShape::parse(&args.shape).map_err(|m| format!("--shape: {m}"))?,
        sequence_len: args.sequence_len.unwrap_or(recipe.sequence_len),
        micro_batch_size: args.micro_batch_size.unwrap_or(recipe.micro_batch_size),
        gradient_accumulation_steps: args.gradient_accumulation_steps.max(1),
        lora_r: args.lora_r.unwrap_or(recipe.lora_r),
        lora_alpha: recipe.lora_alpha,
        lora_dropout: recipe.lora_dropout,
        load_in_4bit: !args.no_4bit,
        gradient_checkpointing: !args.no_recompute,
        warmup_steps: args.warmup_steps.max(1),
        steps: args.steps.max(1),
    };
    let spec = DeviceSpec::parse(&args.device).map_err(|m| format!("--device: {m}"))?;
    let report = run_on(
        spec,
        !args.f32,
        &tigerflow::cache_dir(),
        BenchTask {
            settings: &settings,
            spec,
        },
    )
    .map_err(|m| format!("--device: {m}"))??;
    println!("{}", table(&report, args.peak_tflops));
    if let Some(path) = &args.report {
        let mut json = serde_json::to_value(&report).expect("report serializes");
        json["device"] = spec.to_string().into();
        json["dtype"] = spec.dtype(!args.f32).into();
        json["mfu"] = args.peak_tflops.map(|p| report.mfu(p)).into();
        std::fs::write(path, serde_json::to_string_pretty(&json).expect("json"))
            .map_err(|e| format!("--report {}: {e}", path.display()))?;
    }
    Ok(())
}

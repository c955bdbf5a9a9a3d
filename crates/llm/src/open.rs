//! Opens resolved model files (a Hugging Face directory or a GGUF file): config, tokenizer and
//! a weight source ready for [`crate::weights::load_llama`].

use std::path::Path;

use crate::config::{ConfigError, LlamaConfig};
use crate::gguf_weights::GgufWeights;
use crate::safetensors_dir::SafetensorsDir;
use crate::tokenizer::{TextTokenizer, TokenizerError};
use crate::weights::{WeightError, WeightSource};

/// A model's files, opened but not yet loaded.
pub struct ModelFiles {
    pub config: LlamaConfig,
    pub tokenizer: TextTokenizer,
    pub weights: Box<dyn WeightSource>,
}

/// Model files that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("{0}: cannot read: {1}")]
    Io(String, std::io::Error),
}

impl ModelFiles {
    /// Opens a model directory (config.json, tokenizer.json, safetensors) or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if path.is_dir() {
            let config_path = path.join("config.json");
            let text = std::fs::read_to_string(&config_path)
                .map_err(|e| OpenError::Io(config_path.display().to_string(), e))?;
            let config = LlamaConfig::from_json(&text, &config_path.display().to_string())?;
            let tokenizer = TextTokenizer::from_file(
                &path.join("tokenizer.json"),
                config.bos_token_id,
                config.eos_token_id.clone(),
            )?;
            let weights = Box::new(SafetensorsDir::open(path)?);
            Ok(Self {
                config,
                tokenizer,
                weights,
            })
        } else {
            let weights = GgufWeights::open(path)?;
            let tokenizer = TextTokenizer::from_gguf(&weights.file)?;
            Ok(Self {
                config: weights.config.clone(),
                tokenizer,
                weights: Box::new(weights),
            })
        }
    }
}

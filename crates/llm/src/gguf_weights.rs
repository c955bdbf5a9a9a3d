//! A GGUF file as a [`WeightSource`]: llama.cpp tensor names mapped back to Hugging Face names,
//! q/k rows un-permuted back to the rotate-half layout, and the config built from metadata.

use std::path::Path;

use burn::tensor::TensorData;

use crate::config::{LlamaConfig, RopeScaling};
use crate::gguf::{GgufFile, Value};
use crate::weights::{WeightError, WeightSource};

/// A Llama GGUF file opened for loading.
#[derive(Debug)]
pub struct GgufWeights {
    pub file: GgufFile,
    pub config: LlamaConfig,
}

/// The llama.cpp name of an HF tensor name.
fn gguf_name(hf: &str) -> Option<String> {
    Some(match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (layer, module) = rest.split_once('.')?;
            let short = match module.strip_suffix(".weight")? {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                _ => return None,
            };
            format!("blk.{layer}.{short}.weight")
        }
    })
}

/// Undoes llama.cpp's q/k permutation: within each head, GGUF interleaves the two rotary halves
/// (`[heads, half, 2, in]`); HF keeps them as halves (`[heads, 2, half, in]`).
pub fn unpermute(weight: &[f32], heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0.0; weight.len()];
    for h in 0..heads {
        for i in 0..half {
            for pair in 0..2 {
                let from = ((h * half + i) * 2 + pair) * cols;
                let to = ((h * 2 + pair) * half + i) * cols;
                out[to..to + cols].copy_from_slice(&weight[from..from + cols]);
            }
        }
    }
    out
}

impl GgufWeights {
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let file = GgufFile::open(path)?;
        let config = config_from_metadata(&file)?;
        Ok(Self { file, config })
    }
}

/// Builds the Llama config from `llama.*` and `tokenizer.ggml.*` metadata.
fn config_from_metadata(file: &GgufFile) -> Result<LlamaConfig, WeightError> {
    let path = file.path.display().to_string();
    let meta = &file.metadata;
    let arch = meta
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("");
    if arch != "llama" {
        return Err(WeightError::Format {
            file: path,
            message: format!(
                "general.architecture is {arch:?}; tigerflow runs Llama-architecture models only; fix: use a llama GGUF"
            ),
        });
    }
    let missing = |key: &str| WeightError::Format {
        file: path.clone(),
        message: format!("metadata key {key} is missing or not a number"),
    };
    let int = |key: &str| -> Result<usize, WeightError> {
        meta.get(key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| missing(key))
    };
    let float = |key: &str| meta.get(key).and_then(Value::as_f64);
    let heads = int("llama.attention.head_count")?;
    let hidden = int("llama.embedding_length")?;
    let vocab_size = match int("llama.vocab_size") {
        Ok(v) => v,
        Err(_) => meta
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .map(<[Value]>::len)
            .ok_or_else(|| missing("llama.vocab_size"))?,
    };
    let rope_scaling = match meta.get("llama.rope.scaling.type").and_then(Value::as_str) {
        Some("linear") => Some(RopeScaling::Linear {
            factor: float("llama.rope.scaling.factor")
                .ok_or_else(|| missing("llama.rope.scaling.factor"))? as f32,
        }),
        Some("none") | None => None,
        Some(other) => {
            return Err(WeightError::Format {
                file: path,
                message: format!("rope scaling type {other:?} is not supported (linear is)"),
            });
        }
    };
    if file.tensors.contains_key("rope_freqs.weight") {
        return Err(WeightError::Format {
            file: path,
            message: "per-frequency rope factors (rope_freqs.weight, Llama 3.1 scaling) are not supported in GGUF; fix: load the Hugging Face checkpoint instead".into(),
        });
    }
    let token_id = |key: &str| meta.get(key).and_then(Value::as_u64).map(|v| v as u32);
    let config = LlamaConfig {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: int("llama.feed_forward_length")?,
        num_hidden_layers: int("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: int("llama.attention.head_count_kv").unwrap_or(heads),
        head_dim: int("llama.attention.key_length").unwrap_or(hidden / heads.max(1)),
        rms_norm_eps: float("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: float("llama.rope.freq_base").unwrap_or(10_000.0) as f32,
        rope_scaling,
        max_position_embeddings: int("llama.context_length").unwrap_or(2048),
        tie_word_embeddings: !file.tensors.contains_key("output.weight"),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect(),
    };
    config.validate(&path).map_err(|e| WeightError::Format {
        file: path.clone(),
        message: e.to_string(),
    })?;
    Ok(config)
}

impl WeightSource for GgufWeights {
    fn describe(&self) -> String {
        self.file.path.display().to_string()
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|n| self.file.tensors.contains_key(&n))
    }

    fn read(&mut self, name: &str) -> Result<TensorData, WeightError> {
        let gguf = gguf_name(name).ok_or_else(|| WeightError::Missing {
            source_name: self.describe(),
            name: name.to_owned(),
        })?;
        let shape = self
            .file
            .tensors
            .get(&gguf)
            .map(|t| t.shape())
            .unwrap_or_default();
        let mut values = self.file.read_f32(&gguf)?;
        let heads = if name.ends_with("q_proj.weight") {
            Some(self.config.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.config.num_key_value_heads)
        } else {
            None
        };
        if let (Some(heads), [rows, cols]) = (heads, shape.as_slice()) {
            values = unpermute(&values, heads, *rows, *cols);
        }
        Ok(TensorData::new(values, shape))
    }
}

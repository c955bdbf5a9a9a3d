//! The Llama architecture hyper-parameters, read from a Hugging Face `config.json` (or built
//! from GGUF metadata by the GGUF source).

use serde::{Deserialize, Serialize};

/// How `rope_theta` frequencies are rescaled for longer contexts, as in transformers'
/// `rope_scaling` / `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions are divided by `factor` (all frequencies divided by `factor`).
    Linear { factor: f32 },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
}

/// Llama-family configuration with the field names of transformers' `LlamaConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: key/value heads shared by `num_attention_heads / num_key_value_heads`
    /// query heads. Absent (0 while parsing) means `num_attention_heads`: plain multi-head attention.
    #[serde(default)]
    pub num_key_value_heads: usize,
    /// Per-head width; absent (0 while parsing) means `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: usize,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    #[serde(default, deserialize_with = "deserialize_rope_scaling")]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "deserialize_token_ids")]
    pub eos_token_id: Vec<u32>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f32 {
    10_000.0
}

fn default_max_position_embeddings() -> usize {
    2048
}

/// transformers writes `rope_scaling` with either `type` (older files) or `rope_type`, and
/// `null` or `{"rope_type": "default"}` for no scaling.
fn deserialize_rope_scaling<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<RopeScaling>, D::Error> {
    let Some(mut value) = Option::<serde_json::Value>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(obj) = value.as_object_mut()
        && !obj.contains_key("rope_type")
        && let Some(kind) = obj.remove("type")
    {
        obj.insert("rope_type".into(), kind);
    }
    if value.get("rope_type").and_then(|v| v.as_str()) == Some("default") {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `eos_token_id` is a single id in most configs and a list in Llama 3.
fn deserialize_token_ids<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(u32),
        Many(Vec<u32>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => vec![id],
        Some(OneOrMany::Many(ids)) => ids,
    })
}

/// A config.json that cannot describe a Llama model.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}; fix: use the config.json of a Llama-architecture model")]
    Json {
        file: String,
        source: serde_json::Error,
    },
    #[error(
        "{file}: {field} = {value} is invalid: {reason}; fix: use the config.json of a Llama-architecture model"
    )]
    Invalid {
        file: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl LlamaConfig {
    /// Parses a config.json; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self, ConfigError> {
        let json_error = |source| ConfigError::Json {
            file: file.to_owned(),
            source,
        };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(json_error)?;
        // transformers ≥ 5 writes theta and scaling together as `rope_parameters`.
        if let Some(obj) = value.as_object_mut()
            && let Some(params) = obj.remove("rope_parameters")
        {
            if let Some(theta) = params.get("rope_theta") {
                obj.insert("rope_theta".into(), theta.clone());
            }
            obj.entry("rope_scaling").or_insert(params);
        }
        let mut config: Self = serde_json::from_value(value).map_err(json_error)?;
        if config.num_attention_heads == 0 {
            return Err(ConfigError::Invalid {
                file: file.to_owned(),
                field: "num_attention_heads",
                value: "0".into(),
                reason: "must be positive",
            });
        }
        if config.num_key_value_heads == 0 {
            config.num_key_value_heads = config.num_attention_heads;
        }
        if config.head_dim == 0 {
            config.head_dim = config.hidden_size / config.num_attention_heads;
        }
        config.validate(file)?;
        Ok(config)
    }

    /// Checks the divisibility rules the attention layout relies on.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field, value: usize, reason| ConfigError::Invalid {
            file: file.to_owned(),
            field,
            value: value.to_string(),
            reason,
        };
        if self.num_attention_heads == 0 {
            return Err(invalid("num_attention_heads", 0, "must be positive"));
        }
        let kv = self.num_key_value_heads;
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return Err(invalid(
                "num_key_value_heads",
                kv,
                "must divide num_attention_heads",
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(invalid(
                "head_dim",
                self.head_dim,
                "must be even and positive for RoPE",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smollm_style_config_with_defaults() {
        let json = r#"{"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rms_norm_eps": 1e-5, "rope_theta": 100000, "tie_word_embeddings": true,
            "rope_scaling": null, "eos_token_id": 2, "bos_token_id": 1}"#;
        let config = LlamaConfig::from_json(json, "config.json").unwrap();
        assert_eq!(config.head_dim, 64);
        assert_eq!(config.num_key_value_heads, 3);
        assert_eq!(config.eos_token_id, vec![2]);
        assert_eq!(config.rope_scaling, None);
    }

    #[test]
    fn parses_llama3_rope_scaling_and_eos_list() {
        let json = r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "eos_token_id": [1, 2],
            "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#;
        let config = LlamaConfig::from_json(json, "config.json").unwrap();
        assert_eq!(config.eos_token_id, vec![1, 2]);
        assert!(matches!(
            config.rope_scaling,
            Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0
        ));
    }

    #[test]
    fn reads_transformers_5_rope_parameters() {
        let json = r#"{"vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2,
            "rope_parameters": {"rope_theta": 500.0, "rope_type": "linear", "factor": 2.0}}"#;
        let config = LlamaConfig::from_json(json, "config.json").unwrap();
        assert_eq!(config.rope_theta, 500.0);
        assert_eq!(
            config.rope_scaling,
            Some(RopeScaling::Linear { factor: 2.0 })
        );
    }

    #[test]
    fn rejects_heads_not_divisible_by_kv_heads() {
        let json = r#"{"vocab_size": 8, "hidden_size": 12, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2}"#;
        let err = LlamaConfig::from_json(json, "m/config.json").unwrap_err();
        assert!(err.to_string().contains("num_key_value_heads = 2"), "{err}");
    }
}

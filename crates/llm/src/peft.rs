//! The PEFT adapter directory: `adapter_model.safetensors` + `adapter_config.json`, written and
//! read exactly as `PeftModel.save_pretrained` / `from_pretrained` do for a Llama LoRA.
//!
//! Tensor keys are `base_model.model.` + the module path + `.lora_A.weight` / `.lora_B.weight`
//! (the adapter name is not part of the key), shapes `[r, in]` / `[out, r]`, f32, and the file
//! metadata is `{"format": "pt"}`. The config is PEFT's `LoraConfig` as JSON with sorted keys.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: {message}; fix: point at a directory written by PEFT `save_pretrained` or tigerflow's train stage"
    )]
    Format { path: String, message: String },
}

/// `adapter_config.json`: the fields of PEFT's `LoraConfig` that describe a plain LoRA, written
/// with sorted keys like PEFT's `sort_keys=True` (serde keeps declaration order, which is
/// alphabetical here). Reading ignores fields of newer PEFT versions and defaults missing ones;
/// fields that PEFT lets be of several types stay JSON values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdapterConfig {
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    pub auto_mapping: Option<serde_json::Value>,
    pub base_model_name_or_path: Option<String>,
    pub bias: String,
    pub corda_config: Option<serde_json::Value>,
    pub eva_config: Option<serde_json::Value>,
    pub exclude_modules: Option<serde_json::Value>,
    pub fan_in_fan_out: bool,
    pub inference_mode: bool,
    pub init_lora_weights: serde_json::Value,
    pub layer_replication: Option<serde_json::Value>,
    pub layers_pattern: Option<serde_json::Value>,
    pub layers_to_transform: Option<serde_json::Value>,
    pub loftq_config: serde_json::Map<String, serde_json::Value>,
    pub lora_alpha: f64,
    pub lora_bias: bool,
    pub lora_dropout: f64,
    pub megatron_config: Option<serde_json::Value>,
    pub megatron_core: Option<String>,
    pub modules_to_save: Option<Vec<String>>,
    pub peft_type: String,
    pub r: usize,
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    pub revision: Option<String>,
    pub target_modules: Vec<String>,
    pub task_type: String,
    pub use_dora: bool,
    pub use_rslora: bool,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            alpha_pattern: serde_json::Map::new(),
            auto_mapping: None,
            base_model_name_or_path: None,
            bias: "none".into(),
            corda_config: None,
            eva_config: None,
            exclude_modules: None,
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: serde_json::Value::Bool(true),
            layer_replication: None,
            layers_pattern: None,
            layers_to_transform: None,
            loftq_config: serde_json::Map::new(),
            lora_alpha: 8.0,
            lora_bias: false,
            lora_dropout: 0.0,
            megatron_config: None,
            megatron_core: Some("megatron.core".into()),
            modules_to_save: None,
            peft_type: "LORA".into(),
            r: 8,
            rank_pattern: serde_json::Map::new(),
            revision: None,
            target_modules: Vec::new(),
            task_type: "CAUSAL_LM".into(),
            use_dora: false,
            use_rslora: false,
        }
    }
}

impl AdapterConfig {
    /// A causal-LM LoRA config as PEFT writes it for inference.
    pub fn lora(
        base_model: &str,
        r: usize,
        alpha: f64,
        dropout: f64,
        target_modules: &[String],
    ) -> Self {
        AdapterConfig {
            base_model_name_or_path: Some(base_model.to_owned()),
            lora_alpha: alpha,
            lora_dropout: dropout,
            r,
            target_modules: target_modules.to_vec(),
            ..AdapterConfig::default()
        }
    }
}

/// One adapter's weights, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterTensors {
    /// `[r, in]`.
    pub a: Vec<f32>,
    /// `[out, r]`.
    pub b: Vec<f32>,
    pub r: usize,
    pub in_features: usize,
    pub out_features: usize,
}

/// A whole adapter: module path (`model.layers.3.self_attn.q_proj`) → weights.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftAdapter {
    pub config: AdapterConfig,
    pub modules: BTreeMap<String, AdapterTensors>,
}

fn key(module: &str, which: &str) -> String {
    format!("base_model.model.{module}.{which}.weight")
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl PeftAdapter {
    /// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PeftError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PeftError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut buffers = Vec::new();
        for (module, t) in &self.modules {
            buffers.push((
                key(module, "lora_A"),
                vec![t.r, t.in_features],
                le_bytes(&t.a),
            ));
            buffers.push((
                key(module, "lora_B"),
                vec![t.out_features, t.r],
                le_bytes(&t.b),
            ));
        }
        let views = buffers
            .iter()
            .map(|(k, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| PeftError::Format {
                        path: dir.display().to_string(),
                        message: format!("tensor {k}: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = Some(std::collections::HashMap::from([(
            "format".to_owned(),
            "pt".to_owned(),
        )]));
        let weights = dir.join(ADAPTER_WEIGHTS);
        safetensors::serialize_to_file(views, metadata, &weights).map_err(|e| {
            PeftError::Format {
                path: weights.display().to_string(),
                message: e.to_string(),
            }
        })?;
        let config = dir.join(ADAPTER_CONFIG);
        let json = serde_json::to_string_pretty(&self.config).expect("adapter config serializes");
        std::fs::write(&config, json).map_err(io(&config))
    }

    /// Reads a PEFT LoRA directory (f32, f16 or bf16 weights).
    pub fn load(dir: &Path) -> Result<Self, PeftError> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let format = |path: &Path, message: String| PeftError::Format {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&config_path).map_err(|source| PeftError::Io {
            path: config_path.display().to_string(),
            source,
        })?;
        let config: AdapterConfig = serde_json::from_str(&text).map_err(|e| {
            format(
                &config_path,
                format!("line {}:{}: {e}", e.line(), e.column()),
            )
        })?;
        if config.peft_type != "LORA" {
            return Err(format(
                &config_path,
                format!(
                    "peft_type is {:?}, only LORA is supported",
                    config.peft_type
                ),
            ));
        }
        if config.use_dora || config.use_rslora || config.lora_bias || config.bias != "none" {
            return Err(format(
                &config_path,
                "DoRA, rsLoRA and bias-training adapters are not supported".into(),
            ));
        }
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&weights_path).map_err(|source| PeftError::Io {
            path: weights_path.display().to_string(),
            source,
        })?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| format(&weights_path, e.to_string()))?;
        let mut a_parts = BTreeMap::new();
        let mut b_parts = BTreeMap::new();
        for (name, view) in st.tensors() {
            let module = name
                .strip_prefix("base_model.model.")
                .and_then(|rest| rest.strip_suffix(".weight"))
                .ok_or_else(|| format(&weights_path, format!("unexpected tensor {name}")))?;
            let values =
                to_f32(&view).map_err(|m| format(&weights_path, format!("tensor {name}: {m}")))?;
            let shape = view.shape().to_vec();
            if shape.len() != 2 {
                return Err(format(
                    &weights_path,
                    format!("tensor {name} has shape {shape:?}, expected 2-D"),
                ));
            }
            if let Some(m) = module.strip_suffix(".lora_A") {
                a_parts.insert(m.to_owned(), (values, shape));
            } else if let Some(m) = module.strip_suffix(".lora_B") {
                b_parts.insert(m.to_owned(), (values, shape));
            } else {
                return Err(format(
                    &weights_path,
                    format!("tensor {name} is neither lora_A nor lora_B"),
                ));
            }
        }
        let mut modules = BTreeMap::new();
        for (module, (a, a_shape)) in a_parts {
            let (b, b_shape) = b_parts.remove(&module).ok_or_else(|| {
                format(&weights_path, format!("{module} has lora_A but no lora_B"))
            })?;
            if a_shape[0] != b_shape[1] || a_shape[0] != config.r {
                return Err(format(
                    &weights_path,
                    format!(
                        "{module}: lora_A {a_shape:?} and lora_B {b_shape:?} disagree with r = {}",
                        config.r
                    ),
                ));
            }
            modules.insert(
                module,
                AdapterTensors {
                    a,
                    b,
                    r: a_shape[0],
                    in_features: a_shape[1],
                    out_features: b_shape[0],
                },
            );
        }
        if let Some(module) = b_parts.keys().next() {
            return Err(format(
                &weights_path,
                format!("{module} has lora_B but no lora_A"),
            ));
        }
        Ok(PeftAdapter { config, modules })
    }
}

fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        Dtype::BF16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::F16 => Ok(data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(format!("dtype {other:?} is not supported (f32, bf16, f16)")),
    }
}

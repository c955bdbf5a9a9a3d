use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::StageError;

/// How a running stage talks to the user. The engine draws it as a progress bar line per
/// running stage on a terminal, and as plain log lines otherwise.
pub trait Reporter: Send + Sync {
    /// Starts a new step; `total` is in `unit`s (bytes, messages, steps…) when known.
    fn begin(&self, step: &str, total: Option<u64>, unit: &str);
    /// Absolute position within the current step.
    fn set_position(&self, position: u64);
    /// A short status shown beside the bar (loss, lr…).
    fn set_message(&self, message: &str);
    /// A log line, kept in the stage's log file and shown to the user.
    fn log(&self, line: &str);
}

/// Everything a stage gets for one run.
pub struct Context<'a> {
    /// The stage's name in pipeline.toml.
    pub stage_name: &'a str,
    /// Canonical parameters, as returned by `Stage::resolve_params`.
    pub params: &'a serde_json::Value,
    /// Input name → resolved path (a file, a directory, or another stage's committed output).
    pub inputs: BTreeMap<String, PathBuf>,
    /// The staging directory to write outputs into. It is empty unless the stage is
    /// resumable and a previous attempt with the same fingerprint left files there.
    pub out_dir: &'a Path,
    /// The project root (the directory holding pipeline.toml); relative paths in parameters
    /// are relative to it.
    pub root: &'a Path,
    /// A per-user cache directory that stages may share across runs (downloaded models…).
    pub cache_dir: &'a Path,
    pub reporter: &'a dyn Reporter,
}

impl Context<'_> {
    /// The path of a required input, or an error naming the missing input.
    pub fn input(&self, name: &str) -> Result<&Path, StageError> {
        self.inputs.get(name).map(PathBuf::as_path).ok_or_else(|| {
            StageError::Failed(format!(
                "stage `{}` needs input `{name}`: add it under `inputs` in pipeline.toml",
                self.stage_name
            ))
        })
    }

    /// A path inside the output directory.
    pub fn output(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.out_dir.join(relative)
    }

    /// Resolves a path from a parameter against the project root.
    pub fn project_path(&self, path: impl AsRef<Path>) -> PathBuf {
        self.root.join(path)
    }
}

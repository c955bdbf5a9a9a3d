//! Helpers shared by the integration tests: a reporter that records, and a way to run a stage
//! through the same trait the engine uses.

#![allow(dead_code)] // Each test binary uses a different part of the helpers.

pub(crate) mod mock_hub;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tigerflow_stage::{Context, Reporter, Stage, StageError};

#[derive(Default)]
pub(crate) struct RecordingReporter {
    pub lines: Mutex<Vec<String>>,
    pub positions: Mutex<Vec<u64>>,
}

impl Reporter for RecordingReporter {
    fn begin(&self, step: &str, total: Option<u64>, unit: &str) {
        self.lines
            .lock()
            .unwrap()
            .push(format!("begin {step} {total:?} {unit}"));
    }
    fn set_position(&self, position: u64) {
        self.positions.lock().unwrap().push(position);
    }
    fn set_message(&self, _message: &str) {}
    fn log(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_owned());
    }
}

/// Resolves `params` (a TOML table's text) and runs `stage` with a fresh output directory
/// under `root`, as the engine would. Returns the output directory.
pub(crate) fn run_stage(
    stage: &dyn Stage,
    root: &Path,
    params: &str,
    inputs: &[(&str, PathBuf)],
    reporter: &RecordingReporter,
) -> (PathBuf, Result<(), StageError>) {
    let raw: toml::Table = toml::from_str(params).unwrap();
    let params = stage.resolve_params(&raw).expect("valid parameters");
    let out_dir = tempfile::Builder::new()
        .prefix("out-")
        .tempdir_in(root)
        .unwrap()
        .keep();
    let cache_dir = root.join("cache");
    let mut ctx = Context {
        stage_name: stage.kind(),
        params: &params,
        inputs: inputs
            .iter()
            .map(|(name, path)| (name.to_string(), path.clone()))
            .collect::<BTreeMap<_, _>>(),
        out_dir: &out_dir,
        root,
        cache_dir: &cache_dir,
        reporter,
    };
    let result = stage.run(&mut ctx);
    (out_dir, result)
}

pub(crate) fn receipt(out_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out_dir.join("published.json")).unwrap()).unwrap()
}

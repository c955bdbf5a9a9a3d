//! `tigerflow generate`: continues a chat with the base model and, by default, the pipeline's
//! latest trained adapter.

use std::path::Path;

use tigerflow_stage::Registry;

/// Arguments of `tigerflow generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {}

/// Runs `tigerflow generate`; returns the exit code.
pub fn run(_args: &GenerateArgs, _pipeline_file: &Path, _registry: &Registry) -> i32 {
    eprintln!("tigerflow generate: not available in this build yet");
    2
}

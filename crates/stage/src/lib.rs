//! The only door between the tigerflow engine and the stages.
//!
//! The engine knows stages through [`Stage`] alone: it asks a stage to validate its parameters,
//! names its inputs and outputs, and runs it with a [`Context`]. Stages never see `artifacts/`,
//! the lock file or each other; they read the input paths they are given and write into the
//! fresh output directory they are handed.

mod context;
mod error;
mod params;
mod registry;

pub use context::{Context, Reporter};
pub use error::{ParamError, StageError};
pub use params::{Params, TypedStage, parse_params};
pub use registry::Registry;

use std::path::PathBuf;

/// A named input a stage reads. In pipeline.toml its value is a path, or `@stage[/path]`
/// for the committed output of another stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSlot {
    pub name: &'static str,
    pub required: bool,
    pub help: &'static str,
}

/// What the engine sees of a stage kind (`uses = "..."` in pipeline.toml).
///
/// Implement [`TypedStage`] instead of this trait: it derives the parameter handling from a
/// serde struct.
pub trait Stage: Send + Sync {
    /// The name used in `uses = "..."`.
    fn kind(&self) -> &'static str;

    /// Bump whenever the same inputs and parameters would now give a different output; it is
    /// part of every fingerprint, so a bump re-runs the stage.
    fn code_version(&self) -> u32;

    /// The inputs this kind reads. `None` accepts any names (the `cmd` stage).
    fn input_slots(&self) -> Option<&'static [InputSlot]>;

    /// Validates raw parameters from pipeline.toml and returns them in canonical form with every
    /// default filled in. The canonical form is what gets fingerprinted and handed to `run`.
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, ParamError>;

    /// Files or directories, relative to the output directory, that must exist after a
    /// successful run.
    fn outputs(&self, params: &serde_json::Value) -> Vec<PathBuf>;

    /// Local paths named by parameters whose content changes the result (a local base model,
    /// say). The engine hashes them into the fingerprint like inputs.
    fn extra_dependencies(&self, _params: &serde_json::Value) -> Vec<PathBuf> {
        Vec::new()
    }

    /// A resumable stage gets its staging directory back after a crash, for the same
    /// fingerprint, instead of a fresh one.
    fn resumable(&self) -> bool {
        false
    }

    /// Whether running the stage changes something outside its output directory (a published
    /// folder, a hub repository). Such a stage is never restored from the run cache: it runs
    /// again, so that what it publishes matches the pipeline.
    fn side_effects(&self) -> bool {
        false
    }

    fn run(&self, ctx: &mut Context<'_>) -> Result<(), StageError>;
}

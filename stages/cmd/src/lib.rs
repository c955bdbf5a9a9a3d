//! The `cmd` stage: runs a shell command, DVC style.
//!
//! ```toml
//! [stages.count]
//! uses = "cmd"
//! inputs = { text = "data/words.txt" }
//! cmd = "wc -l < \"$TF_IN_TEXT\" > \"$TF_OUT/count.txt\""
//! outs = ["count.txt"]
//! ```

mod params;
mod shell;

pub use params::CmdParams;

use std::path::PathBuf;

use tigerflow_stage::{Context, InputSlot, ParamError, Registry, Stage, StageError, parse_params};

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut Registry) {
    registry.add(CmdStage);
}

/// A shell command with declared outputs.
pub struct CmdStage;

impl CmdStage {
    fn typed(params: &serde_json::Value) -> Result<CmdParams, StageError> {
        serde_json::from_value(params.clone()).map_err(|e| {
            StageError::Failed(format!(
                "internal: canonical cmd parameters do not parse: {e}"
            ))
        })
    }
}

impl Stage for CmdStage {
    fn kind(&self) -> &'static str {
        "cmd"
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn input_slots(&self) -> Option<&'static [InputSlot]> {
        None
    }

    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, ParamError> {
        let params: CmdParams = parse_params(raw)?;
        serde_json::to_value(&params).map_err(|e| ParamError::new(&[], e.to_string()))
    }

    fn outputs(&self, params: &serde_json::Value) -> Vec<PathBuf> {
        Self::typed(params).map(|p| p.outs).unwrap_or_default()
    }

    fn extra_dependencies(&self, params: &serde_json::Value) -> Vec<PathBuf> {
        Self::typed(params).map(|p| p.deps).unwrap_or_default()
    }

    fn run(&self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let params = Self::typed(ctx.params)?;
        shell::run(&params, ctx)
    }
}

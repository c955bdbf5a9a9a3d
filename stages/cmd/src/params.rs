use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tigerflow_stage::{ParamError, Params};

/// Parameters of a `cmd` stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CmdParams {
    /// The command, run by `sh -c` with the project root as working directory. Required
    /// (default: empty, which is rejected).
    pub cmd: String,
    /// Paths relative to the output directory (`$TF_OUT`) that must exist after the command
    /// succeeds. Default: none.
    pub outs: Vec<PathBuf>,
    /// Files or directories, relative to the project root, that the command reads besides its
    /// `inputs`; their content is part of the fingerprint. Default: none.
    pub deps: Vec<PathBuf>,
    /// Free values, part of the fingerprint, exported as `TF_PARAM_<KEY>` (strings as they are,
    /// other values as JSON). Default: none.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Extra environment variables for the command. They come from pipeline.toml, so they are
    /// part of the fingerprint: put secrets in the real environment instead. Default: none.
    pub env: BTreeMap<String, String>,
}

impl Params for CmdParams {
    fn validate(&self) -> Result<(), ParamError> {
        if self.cmd.trim().is_empty() {
            return Err(ParamError::new(
                &["cmd"],
                "`cmd` is required (got none); fix: add `cmd = \"...\"` to the stage",
            ));
        }
        for (i, out) in self.outs.iter().enumerate() {
            if out.is_absolute() || out.components().any(|c| c.as_os_str() == "..") {
                let index = i.to_string();
                return Err(ParamError::new(
                    &["outs", &index],
                    format!(
                        "`outs` entries must be relative paths inside the output directory (got {}); fix: write it relative to $TF_OUT",
                        out.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

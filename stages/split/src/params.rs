//! Parameters of `uses = "split"`.

use serde::{Deserialize, Serialize};
use tigerflow_stage::{ParamError, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Any sample may go to either side.
    Random,
    /// The latest samples (by their first message) go to test.
    Time,
    /// Whole conversations go to one side, so no conversation has windows on both.
    Session,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitParams {
    /// Fraction of samples for the test side, in (0, 1). Default: `0.15`.
    pub test_size: f64,
    /// Seed of the shuffles (SplitMix64, see `rng.rs`). Default: `42`.
    pub seed: u64,
    /// Shuffle the samples (with `random`: before choosing test; always: the order written
    /// in each file). Unshuffled files are in time order. Default: `true`.
    pub shuffle: bool,
    /// `"random"`, `"time"` or `"session"`. Default: `"random"`.
    pub strategy: Strategy,
}

impl Default for SplitParams {
    fn default() -> Self {
        SplitParams {
            test_size: 0.15,
            seed: 42,
            shuffle: true,
            strategy: Strategy::Random,
        }
    }
}

impl Params for SplitParams {
    fn validate(&self) -> Result<(), ParamError> {
        if !(self.test_size > 0.0 && self.test_size < 1.0) {
            return Err(ParamError::new(
                &["test_size"],
                format!(
                    "must be between 0 and 1, exclusive (got {}); fix: for example 0.15",
                    self.test_size
                ),
            ));
        }
        Ok(())
    }
}

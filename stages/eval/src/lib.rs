//! The `eval` stage: base vs fine-tuned test loss, generations, and an HTML report.

pub mod params;
pub mod report;
pub mod stage;

use tigerflow_stage::Registry;

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut Registry) {
    registry.add(stage::EvalStage);
}

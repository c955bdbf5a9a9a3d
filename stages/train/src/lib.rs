//! The `train` stage: QLoRA fine-tuning of a Llama-family model with PEFT-compatible output.

pub mod launch;
mod model_card;
pub mod params;
pub mod rank;
pub mod stage;

use tigerflow_stage::Registry;

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut Registry) {
    registry.add(stage::TrainStage);
}

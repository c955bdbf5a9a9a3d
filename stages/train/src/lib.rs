//! The `train` stage: QLoRA fine-tuning of a Llama-family model with PEFT-compatible output.

pub mod adamw;
pub mod base;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod flat;
pub mod metrics;
mod model_card;
pub mod packing;
pub mod params;
pub mod plan;
pub mod plot;
pub mod schedule;
pub mod stage;
pub mod step;
pub mod trainer;

use tigerflow_stage::Registry;

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut Registry) {
    registry.add(stage::TrainStage);
}

//! The `train` stage: QLoRA fine-tuning of a Llama-family model with PEFT-compatible output.

pub mod adamw;
pub mod base;
pub mod bench;
pub mod checkpoint;
pub mod collective;
pub mod data;
pub mod flat;
pub mod launch;
pub mod metrics;
mod model_card;
#[cfg(feature = "cuda")]
mod nccl;
pub mod nccl_lib;
pub mod packing;
pub mod params;
pub mod plan;
pub mod plot;
pub mod rank;
pub mod rank_env;
mod rank_report;
pub mod schedule;
pub mod stage;
pub mod step;
pub mod tcp_group;
pub mod trainer;

use tigerflow_stage::Registry;

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut Registry) {
    registry.add(stage::TrainStage);
}

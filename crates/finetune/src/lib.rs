//! The fine-tuning core that the `train` and `eval` stages share: loading a base model, reading
//! and packing the data, the training step and its AdamW, the learning-rate schedule,
//! checkpoints, metrics and their plots, evaluation, and the training benchmark behind
//! `tigerflow bench train`. Stage plumbing (parameters, outputs, ranks) lives in the stages.

pub mod adamw;
pub mod base;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod flat;
pub mod metrics;
pub mod packing;
pub mod plan;
pub mod plot;
pub mod schedule;
pub mod step;
pub mod trainer;

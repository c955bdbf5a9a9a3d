//! The `split` stage: splits the `chunk` stage's samples into train and test sets,
//! deterministically on every platform (the RNG is specified in `rng.rs`).

mod assign;
mod params;
mod rng;
mod stage;

pub use assign::{Assignment, Key, assign, test_count};
pub use params::{SplitParams, Strategy};
pub use rng::SplitMix64;
pub use stage::SplitStage;

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut tigerflow_stage::Registry) {
    registry.add(SplitStage);
}

//! The `chunk` stage: turns the messages table into training samples. Text-bearing messages
//! in time order are cut into conversations at long pauses, rendered with a template
//! (`### Name: text`, no separator), and packed into windows that fit a character or token
//! budget. Also home of the dataset files and report shared with `split`.

pub mod dataset;
mod params;
mod render;
pub mod report;
mod stage;
mod turns;
mod window;

pub use params::{ChunkParams, Scrub, Speakers};
pub use stage::{ChunkStage, write_json};
pub use window::{Chars, Measure, Window, windows};

/// Adds this crate's stage kinds to the registry.
pub fn register(registry: &mut tigerflow_stage::Registry) {
    registry.add(ChunkStage);
}

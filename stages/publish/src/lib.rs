//! Publishing stages: `upload` (the dataset) and `push` (the LoRA adapter), each to a local
//! folder (`dir:PATH`) or a Hugging Face Hub repository (`hf:owner/name`).

mod adapter;
mod card;
mod dataset;
mod dir_target;
pub mod hub;
mod manifest;
mod params;
mod publish;
mod push;
mod receipt;
mod target;
mod upload;

pub use dir_target::MARKER;
pub use params::PublishParams;
pub use publish::HubAccess;
pub use push::Push;
pub use upload::Upload;

use tigerflow_stage::Registry;

/// Adds `upload` and `push` to the registry; both read hub settings from the environment.
pub fn register(registry: &mut Registry) {
    registry.add(Upload::default());
    registry.add(Push::default());
}

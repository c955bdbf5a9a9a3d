//! The `telegram` stage.

use tigerflow_stage::Registry;

/// Adds this crate's stage kinds to the registry.
pub fn register(_registry: &mut Registry) {}

//! The tigerflow engine: pipeline config, DAG, fingerprints, artifact store, lock and runner.
//! It knows stages only through `tigerflow_stage::Stage` and never imports ML code.

mod assess;
pub mod config;
pub mod dag;
mod error;
pub mod fingerprint;
mod fsutil;
pub mod lock;
pub mod overrides;
pub mod progress;
mod project;
pub mod runlock;
pub mod runner;
pub mod secrets;
pub mod selection;
mod span;
pub mod statcache;
pub mod store;
mod suggest;

pub use error::Error;
pub use project::Project;

use std::path::PathBuf;

/// The per-user cache shared by runs (downloaded models…): `$TIGERFLOW_CACHE`, else
/// `$XDG_CACHE_HOME/tigerflow`, else `~/.cache/tigerflow`.
pub fn cache_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("TIGERFLOW_CACHE") {
        return dir;
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return dir.join("tigerflow");
    }
    var("HOME")
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache")
        .join("tigerflow")
}

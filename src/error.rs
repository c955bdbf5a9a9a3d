use std::path::PathBuf;

use crate::config::ConfigError;
use crate::lock::LockError;
use crate::runlock::RunLockError;

/// Everything the engine can fail with outside a stage's own run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}; fix: run in the directory holding pipeline.toml, or pass -C DIR / --pipeline FILE", path.display())]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no stage `{name}` in {file}{hint}")]
    UnknownStage {
        name: String,
        file: String,
        hint: String,
    },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    RunLock(#[from] RunLockError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// 2 for bad configuration or usage, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ReadConfig { .. }
            | Error::Config(_)
            | Error::UnknownStage { .. }
            | Error::Usage(_) => 2,
            Error::Lock(_) | Error::RunLock(_) | Error::Io { .. } => 1,
        }
    }
}

use std::path::PathBuf;

/// A parameter that failed to parse or validate.
///
/// `path` is the key path inside the stage's table (for example `["scrub", "0"]`), so that the
/// engine can point at the exact line and column of pipeline.toml.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParamError {
    pub path: Vec<String>,
    pub message: String,
}

impl ParamError {
    pub fn new(path: &[&str], message: impl Into<String>) -> Self {
        ParamError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

/// Why a stage run failed. Every variant carries enough to tell the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Bad input data: names the file and the place in it.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A declared output was not produced.
    #[error("declared output `{0}` was not produced")]
    MissingOutput(PathBuf),
    #[error("{0}")]
    Failed(String),
}

impl StageError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StageError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        StageError::Input {
            path: path.into(),
            message: message.into(),
        }
    }
}

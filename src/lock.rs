//! `pipeline.lock`: what ran, with which fingerprint, where its output is. Human-readable TOML,
//! rewritten atomically after every stage that commits.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fingerprint::{HashedInput, Ingredients, listed_files};
use crate::statcache::Tree;

const HEADER: &str = "# Written by tigerflow after every stage that commits: what ran, with which\n\
# fingerprint, and where its output is. Do not edit.\n\n";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    #[serde(default)]
    pub stages: BTreeMap<String, LockEntry>,
}

/// One committed stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockEntry {
    pub kind: String,
    pub code_version: u32,
    pub fingerprint: String,
    /// The committed output directory, relative to the project root.
    pub output: String,
    /// Content hash of the output directory.
    pub output_hash: String,
    /// Hash of each output file (directories of up to 64 files), to name what changed downstream.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_files: BTreeMap<String, String>,
    /// When the run that produced the output started (UTC, RFC 3339).
    pub started: String,
    pub duration_s: f64,
    /// Canonical parameters as JSON (they come from pipeline.toml; never environment values).
    pub params: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, HashedInput>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Shows the parser's message alone: its full text quotes the file over several lines.
    #[error(
        "{path} is not a valid lock file ({}); fix: delete it, the next run rebuilds it",
        source.message()
    )]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl LockEntry {
    pub fn new(
        ingredients: &Ingredients,
        output: String,
        tree: &Tree,
        started: String,
        duration_s: f64,
    ) -> Self {
        LockEntry {
            kind: ingredients.kind.clone(),
            code_version: ingredients.code_version,
            fingerprint: ingredients.fingerprint(),
            output,
            output_hash: tree.hash.to_hex().to_string(),
            output_files: listed_files(tree),
            started,
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            params: ingredients.params.to_string(),
            inputs: ingredients.inputs.clone(),
            deps: ingredients.deps.clone(),
        }
    }

    pub fn ingredients(&self) -> Ingredients {
        Ingredients {
            kind: self.kind.clone(),
            code_version: self.code_version,
            params: serde_json::from_str(&self.params).unwrap_or(serde_json::Value::Null),
            inputs: self.inputs.clone(),
            deps: self.deps.clone(),
        }
    }
}

impl LockFile {
    pub const VERSION: u32 = 1;

    /// Reads the lock file; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::default()),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|source| LockError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes the lock, stages in `order` (pipeline order) first, atomically.
    pub fn save(&self, path: &Path, order: &[&str]) -> Result<(), LockError> {
        let mut stages = toml::Table::new();
        let ordered = order
            .iter()
            .filter_map(|name| self.stages.get_key_value(*name))
            .chain(
                self.stages
                    .iter()
                    .filter(|(name, _)| !order.contains(&name.as_str())),
            );
        for (name, entry) in ordered {
            let value = toml::Value::try_from(entry).expect("lock entries serialize to TOML");
            stages.insert(name.clone(), value);
        }
        let mut doc = toml::Table::new();
        doc.insert("version".into(), toml::Value::Integer(Self::VERSION.into()));
        doc.insert("stages".into(), toml::Value::Table(stages));
        let text = format!(
            "{HEADER}{}",
            toml::to_string(&doc).expect("tables serialize")
        );
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| LockError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// RFC 3339 UTC timestamp of a moment, to the second.
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3661)),
            "2026-11-26T01:01:01Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn round_trips_in_pipeline_order() {
        let dir = tempfile::tempdir().unwrap();
        let ing = Ingredients {
            kind: "cmd".into(),
            code_version: 1,
            params: serde_json::json!({"cmd": "true"}),
            inputs: BTreeMap::new(),
            deps: BTreeMap::new(),
        };
        let mut lock = LockFile {
            version: 1,
            stages: BTreeMap::new(),
        };
        for name in ["b", "a"] {
            lock.stages.insert(
                name.into(),
                LockEntry::new(
                    &ing,
                    format!("artifacts/{name}/x"),
                    &Tree {
                        hash: blake3::hash(b"out"),
                        files: vec![("f".into(), blake3::hash(b"f"))],
                    },
                    "t".into(),
                    0.5,
                ),
            );
        }
        let path = dir.path().join("pipeline.lock");
        lock.save(&path, &["b", "a"]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.find("[stages.b]").unwrap() < text.find("[stages.a]").unwrap(),
            "{text}"
        );
        assert_eq!(LockFile::load(&path).unwrap(), lock);
        assert_eq!(lock.stages["a"].ingredients(), ing);
    }
}

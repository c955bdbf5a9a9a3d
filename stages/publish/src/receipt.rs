//! `published.json`: what a publishing stage did, written into its own output directory
//! after the publication succeeded (so its presence means success).

use std::path::Path;

use serde::Serialize;
use tigerflow_stage::StageError;

use crate::hub::CommitInfo;

pub(crate) const RECEIPT: &str = "published.json";

#[derive(Debug, Serialize)]
pub(crate) struct Receipt {
    /// The `target` parameter as written.
    pub target: String,
    /// Where to look at the result: a folder path or the repository's web page.
    pub location: String,
    pub revision: Option<String>,
    /// SHA-256 over the file list and contents.
    pub fingerprint: String,
    /// Whether anything was written or committed.
    pub changed: bool,
    pub files: Vec<FileRecord>,
    pub commit: Option<CommitInfo>,
}

#[derive(Debug, Serialize)]
pub(crate) struct FileRecord {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `written`, `unchanged`, or for the hub `committed`, `uploaded`, `reused`, `ignored`.
    pub fate: &'static str,
}

impl Receipt {
    pub(crate) fn write(&self, out_dir: &Path) -> Result<(), StageError> {
        let path = out_dir.join(RECEIPT);
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| StageError::Failed(format!("internal: encoding the receipt: {e}")))?;
        text.push('\n');
        std::fs::write(&path, text)
            .map_err(|e| StageError::io(format!("writing {}", path.display()), e))
    }
}

//! The commit itself (`POST .../commit/{revision}`): one NDJSON body naming every file, with
//! regular files inline in base64 and LFS files by object id.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::client::{Hub, read_error};
use super::error::HubError;
use crate::manifest::Entry;

/// How a file enters the commit.
pub(super) enum CommitFile<'e> {
    Regular(&'e Entry),
    Lfs(&'e Entry),
}

/// What the hub answers for a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    pub commit_url: String,
    pub commit_oid: String,
}

/// The NDJSON body: a header line, then one line per file.
pub(super) fn ndjson(
    summary: &str,
    description: &str,
    files: &[CommitFile<'_>],
) -> Result<String, HubError> {
    let mut lines = vec![json!({
        "key": "header",
        "value": { "summary": summary, "description": description },
    })];
    for file in files {
        lines.push(match file {
            CommitFile::Regular(entry) => json!({
                "key": "file",
                "value": {
                    "content": BASE64.encode(entry.read_all().map_err(read_error(&entry.path))?),
                    "path": entry.path,
                    "encoding": "base64",
                },
            }),
            CommitFile::Lfs(entry) => json!({
                "key": "lfsFile",
                "value": { "path": entry.path, "algo": "sha256", "oid": entry.sha256, "size": entry.size },
            }),
        });
    }
    Ok(lines.iter().map(|line| format!("{line}\n")).collect())
}

impl Hub<'_> {
    pub fn commit(&self, body: String) -> Result<CommitInfo, HubError> {
        let url = self.api_url("commit");
        let response = self.send(&url, || {
            Ok(self
                .request(Method::POST, &url)?
                .header(CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone()))
        })?;
        self.json(&url, response)
    }
}

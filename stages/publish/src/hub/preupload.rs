//! Asking the hub how each file should travel (`POST .../preupload/{revision}`): inline in the
//! commit ("regular") or through LFS, and what the repository already holds at that path.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::json;

use super::client::{Hub, read_error};
use super::error::HubError;
use crate::manifest::Entry;

/// The hub takes at most this many files per preupload call.
const BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    Regular,
    Lfs,
}

/// The hub's answer for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mode: UploadMode,
    /// The hub's `.gitignore` excludes the path.
    pub ignored: bool,
    /// The object id at that path on the branch: a git blob id for regular files, the
    /// SHA-256 for LFS files.
    pub remote_oid: Option<String>,
}

#[derive(Deserialize)]
struct Response {
    files: Vec<FileAnswer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileAnswer {
    path: String,
    upload_mode: String,
    #[serde(default)]
    should_ignore: bool,
    #[serde(default)]
    oid: Option<String>,
}

impl Hub<'_> {
    /// One plan per entry, in order.
    pub fn preupload(&self, entries: &[Entry]) -> Result<Vec<Plan>, HubError> {
        let url = self.api_url("preupload");
        let mut plans = Vec::with_capacity(entries.len());
        for batch in entries.chunks(BATCH) {
            let mut files = Vec::with_capacity(batch.len());
            for entry in batch {
                let sample = entry.read_range(0, 512).map_err(read_error(&entry.path))?;
                files.push(json!({
                    "path": entry.path,
                    "sample": BASE64.encode(sample),
                    "size": entry.size,
                }));
            }
            let body = json!({ "files": files }).to_string();
            let response = self.send(&url, || {
                Ok(self
                    .request(Method::POST, &url)?
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })?;
            let answer: Response = self.json(&url, response)?;
            for entry in batch {
                let file = answer
                    .files
                    .iter()
                    .find(|f| f.path == entry.path)
                    .ok_or_else(|| HubError::Protocol {
                        url: url.clone(),
                        message: format!("no answer for `{}`", entry.path),
                    })?;
                let mode = match file.upload_mode.as_str() {
                    // The hub sends empty files inline whatever it says.
                    _ if entry.size == 0 => UploadMode::Regular,
                    "lfs" => UploadMode::Lfs,
                    "regular" => UploadMode::Regular,
                    other => {
                        return Err(HubError::Protocol {
                            url: url.clone(),
                            message: format!("unknown uploadMode `{other}` for `{}`", entry.path),
                        });
                    }
                };
                plans.push(Plan {
                    mode,
                    ignored: file.should_ignore,
                    remote_oid: file.oid.clone(),
                });
            }
        }
        Ok(plans)
    }
}

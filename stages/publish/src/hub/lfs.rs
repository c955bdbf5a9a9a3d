//! Uploading large files through git LFS: the batch call, then a basic PUT or a multipart
//! upload per object, then the optional verify call.

use std::collections::BTreeMap;
use std::fs::File;

use reqwest::Method;
use reqwest::blocking::Body;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG};
use serde::Deserialize;
use serde_json::json;

use super::client::{Hub, read_error};
use super::error::HubError;
use crate::manifest::{Content, Entry};

const LFS_JSON: &str = "application/vnd.git-lfs+json";

#[derive(Deserialize)]
struct BatchResponse {
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<ObjectError>,
}

#[derive(Deserialize)]
struct Actions {
    upload: Option<Action>,
    verify: Option<Action>,
}

#[derive(Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ObjectError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

/// What happened to one LFS object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LfsOutcome {
    Uploaded,
    /// The hub already had the object: nothing was sent.
    AlreadyThere,
}

impl Hub<'_> {
    /// Makes sure the hub holds every entry's content as an LFS object. `on_bytes` hears of
    /// each uploaded slice.
    pub fn upload_lfs(
        &self,
        entries: &[&Entry],
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<Vec<LfsOutcome>, HubError> {
        let url = format!(
            "{}/{}{}.git/info/lfs/objects/batch",
            self.config.endpoint,
            self.kind.url_prefix(),
            self.repo
        );
        let objects: Vec<_> = entries
            .iter()
            .map(|e| json!({ "oid": e.sha256, "size": e.size }))
            .collect();
        let body = json!({
            "operation": "upload",
            "transfers": ["basic", "multipart"],
            "objects": objects,
            "hash_algo": "sha256",
            "ref": { "name": self.revision },
        })
        .to_string();
        let response = self.send(&url, || {
            Ok(self
                .request(Method::POST, &url)?
                .header(ACCEPT, LFS_JSON)
                .header(CONTENT_TYPE, LFS_JSON)
                .body(body.clone()))
        })?;
        let batch: BatchResponse = self.json(&url, response)?;
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            let object = batch
                .objects
                .iter()
                .find(|o| o.oid == entry.sha256)
                .ok_or_else(|| HubError::Protocol {
                    url: url.clone(),
                    message: format!(
                        "the LFS batch answer lacks `{}` ({})",
                        entry.path, entry.sha256
                    ),
                })?;
            if let Some(error) = &object.error {
                return Err(HubError::LfsObject {
                    path: entry.path.clone(),
                    message: format!("{} (code {})", error.message, error.code.unwrap_or(0)),
                });
            }
            let Some(upload) = object.actions.as_ref().and_then(|a| a.upload.as_ref()) else {
                on_bytes(entry.size);
                outcomes.push(LfsOutcome::AlreadyThere);
                continue;
            };
            if upload.header.contains_key("chunk_size") {
                self.put_multipart(entry, upload, on_bytes)?;
            } else {
                self.put_basic(entry, upload)?;
                on_bytes(entry.size);
            }
            if let Some(verify) = object.actions.as_ref().and_then(|a| a.verify.as_ref()) {
                self.verify(entry, verify)?;
            }
            outcomes.push(LfsOutcome::Uploaded);
        }
        Ok(outcomes)
    }

    /// One PUT of the whole content; a file is streamed from disk, reopened on each attempt.
    fn put_basic(&self, entry: &Entry, upload: &Action) -> Result<(), HubError> {
        let response = self.send(&upload.href, || {
            let body = match &entry.content {
                Content::File(path) => Body::sized(
                    File::open(path).map_err(read_error(&entry.path))?,
                    entry.size,
                ),
                Content::Bytes(bytes) => Body::from(bytes.clone()),
            };
            Ok(self.request(Method::PUT, &upload.href)?.body(body))
        })?;
        if !response.status().is_success() {
            return Err(self.status_error(&upload.href, response, 1));
        }
        Ok(())
    }

    /// PUTs each `chunk_size` slice to its numbered URL, then posts the collected ETags to
    /// the completion URL.
    fn put_multipart(
        &self,
        entry: &Entry,
        upload: &Action,
        on_bytes: &mut dyn FnMut(u64),
    ) -> Result<(), HubError> {
        let chunk_size: u64 = upload.header["chunk_size"]
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| HubError::Protocol {
                url: upload.href.clone(),
                message: format!("bad chunk_size `{}`", upload.header["chunk_size"]),
            })?;
        let mut part_urls: Vec<(u32, &String)> = upload
            .header
            .iter()
            .filter_map(|(key, url)| key.parse::<u32>().ok().map(|n| (n, url)))
            .collect();
        part_urls.sort();
        let expected = entry.size.div_ceil(chunk_size);
        if part_urls.len() as u64 != expected {
            return Err(HubError::Protocol {
                url: upload.href.clone(),
                message: format!(
                    "{} part URLs for {} bytes in chunks of {chunk_size} (expected {expected})",
                    part_urls.len(),
                    entry.size
                ),
            });
        }
        let mut parts = Vec::with_capacity(part_urls.len());
        for (index, (number, url)) in part_urls.into_iter().enumerate() {
            let bytes = entry
                .read_range(index as u64 * chunk_size, chunk_size)
                .map_err(read_error(&entry.path))?;
            let response = self.send(url, || {
                Ok(self.request(Method::PUT, url)?.body(bytes.clone()))
            })?;
            if !response.status().is_success() {
                return Err(self.status_error(url, response, 1));
            }
            let etag = response
                .headers()
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| HubError::Protocol {
                    url: url.clone(),
                    message: format!(
                        "part {number} of `{}` came back without an ETag",
                        entry.path
                    ),
                })?;
            parts.push(json!({ "partNumber": number, "etag": etag }));
            on_bytes(bytes.len() as u64);
        }
        let body = json!({ "oid": entry.sha256, "parts": parts }).to_string();
        let response = self.send(&upload.href, || {
            Ok(self
                .request(Method::POST, &upload.href)?
                .header(ACCEPT, LFS_JSON)
                .header(CONTENT_TYPE, LFS_JSON)
                .body(body.clone()))
        })?;
        if !response.status().is_success() {
            return Err(self.status_error(&upload.href, response, 1));
        }
        Ok(())
    }

    fn verify(&self, entry: &Entry, verify: &Action) -> Result<(), HubError> {
        let body = json!({ "oid": entry.sha256, "size": entry.size }).to_string();
        let response = self.send(&verify.href, || {
            let mut request = self
                .request(Method::POST, &verify.href)?
                .header(ACCEPT, LFS_JSON)
                .header(CONTENT_TYPE, LFS_JSON);
            for (key, value) in &verify.header {
                request = request.header(key, value);
            }
            Ok(request.body(body.clone()))
        })?;
        if !response.status().is_success() {
            return Err(self.status_error(&verify.href, response, 1));
        }
        Ok(())
    }
}

//! The HTTP side of the hub client: configuration, authentication, retries and error mapping.
//! The protocol steps (repo, preupload, LFS, commit) live in their own files and go through
//! [`Hub::send`].

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tigerflow_https::error_chain;
use tigerflow_stage::Reporter;

use super::error::HubError;
use super::retry::RetryPolicy;
use super::token::{Token, TokenSource, find_token};
use crate::target::RepoName;

/// The public hub, used unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Everything needed to talk to one hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL without a trailing slash.
    pub endpoint: String,
    pub token: Token,
    pub token_source: TokenSource,
    pub retry: RetryPolicy,
    /// Per request; uploads of large LFS parts need minutes on slow links.
    pub timeout: Duration,
    /// Roots trusted in addition to the system store (`SSL_CERT_FILE`).
    pub ssl_cert_file: Option<PathBuf>,
}

impl HubConfig {
    /// Reads `HF_ENDPOINT`, `SSL_CERT_FILE` and the token from the process environment.
    pub fn from_env() -> Result<HubConfig, HubError> {
        let env = |key: &str| std::env::var(key).ok();
        let (token, token_source) = find_token(env, std::env::home_dir().as_deref())
            .map_err(|looked_in| HubError::NoToken { looked_in })?;
        Ok(HubConfig {
            endpoint: env("HF_ENDPOINT")
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            token,
            token_source,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(600),
            ssl_cert_file: env("SSL_CERT_FILE").map(PathBuf::from),
        })
    }

    /// A configuration for a given endpoint and token (tests, embedding).
    pub fn new(endpoint: impl Into<String>, token: Token) -> HubConfig {
        HubConfig {
            endpoint: endpoint.into(),
            token,
            token_source: TokenSource::Env,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(600),
            ssl_cert_file: None,
        }
    }
}

/// The kind of repository, which decides its URL prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `type` in the create-repo body.
    pub fn type_name(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }

    /// The path segment of the JSON API (`/api/models/...`, `/api/datasets/...`).
    pub fn api_segment(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// The prefix of git and web URLs (`datasets/owner/name`, plain `owner/name` for models).
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// A client bound to one repository and branch.
pub struct Hub<'a> {
    http: Client,
    pub(super) config: HubConfig,
    pub(super) repo: RepoName,
    pub(super) kind: RepoKind,
    pub(super) revision: String,
    pub(super) reporter: &'a dyn Reporter,
}

impl<'a> Hub<'a> {
    pub fn new(
        config: HubConfig,
        repo: RepoName,
        kind: RepoKind,
        revision: &str,
        reporter: &'a dyn Reporter,
    ) -> Result<Hub<'a>, HubError> {
        let http = tigerflow_https::client(config.timeout, config.ssl_cert_file.as_deref())
            .map_err(HubError::Client)?;
        Ok(Hub {
            http,
            config: HubConfig {
                endpoint: config.endpoint.trim_end_matches('/').to_owned(),
                ..config
            },
            repo,
            kind,
            revision: revision.to_owned(),
            reporter,
        })
    }

    /// `{endpoint}/api/{datasets|models}/{owner}/{name}/{what}/{revision}`.
    pub(super) fn api_url(&self, what: &str) -> String {
        format!(
            "{}/api/{}/{}/{what}/{}",
            self.config.endpoint,
            self.kind.api_segment(),
            self.repo,
            encode_segment(&self.revision)
        )
    }

    /// The repository's web page.
    pub fn repo_url(&self) -> String {
        format!(
            "{}/{}{}",
            self.config.endpoint,
            self.kind.url_prefix(),
            self.repo
        )
    }

    /// Starts a request; the token goes only to the hub itself, never to the storage URLs
    /// that LFS hands out.
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<RequestBuilder, HubError> {
        let builder = self.http.request(method, url);
        if !url.starts_with(&self.config.endpoint) {
            return Ok(builder);
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.config.token.expose()))
            .map_err(|_| {
                HubError::Client(format!(
                    "the token from {} contains characters that cannot go in an HTTP header; fix: copy it again",
                    self.config.token_source
                ))
            })?;
        value.set_sensitive(true);
        Ok(builder.header(AUTHORIZATION, value))
    }

    /// Sends a request built by `make` (called again for every attempt), retrying on 429, 5xx
    /// and transport errors, and maps the final failure to a [`HubError`]. Other 4xx answers
    /// are returned to the caller unless they are 401/403/404.
    pub(super) fn send(
        &self,
        url: &str,
        make: impl Fn() -> Result<RequestBuilder, HubError>,
    ) -> Result<Response, HubError> {
        let attempts = self.config.retry.attempts.max(1);
        for attempt in 1..=attempts {
            let (why, retry_after) = match make()?.send() {
                Ok(response) => {
                    let status = response.status();
                    if status.as_u16() != 429 && !status.is_server_error() {
                        return self.check(url, response);
                    }
                    if attempt == attempts {
                        return Err(self.status_error(url, response, attempts));
                    }
                    let retry_after = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (format!("HTTP {}", status.as_u16()), retry_after)
                }
                Err(e) if e.is_builder() => return Err(HubError::Client(error_chain(&e))),
                Err(e) => {
                    if attempt == attempts {
                        return Err(HubError::Transport {
                            url: url.to_owned(),
                            attempts,
                            message: error_chain(&e),
                        });
                    }
                    (error_chain(&e), None)
                }
            };
            let delay = self.config.retry.delay(attempt, retry_after);
            self.reporter.log(&format!(
                "{url}: {why}; retrying in {:.1}s (attempt {attempt} of {attempts})",
                delay.as_secs_f64()
            ));
            std::thread::sleep(delay);
        }
        unreachable!("the last attempt always returns")
    }

    fn check(&self, url: &str, response: Response) -> Result<Response, HubError> {
        match response.status().as_u16() {
            401 | 403 => Err(HubError::Auth {
                status: response.status().as_u16(),
                url: url.to_owned(),
                repo: self.repo.to_string(),
                source_of_token: self.config.token_source.clone(),
            }),
            404 => Err(HubError::NotFound {
                url: url.to_owned(),
                repo: self.repo.to_string(),
                revision: self.revision.clone(),
            }),
            _ => Ok(response),
        }
    }

    pub(super) fn status_error(&self, url: &str, response: Response, attempts: u32) -> HubError {
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        let mut body: String = body.chars().take(300).collect();
        if body.is_empty() {
            body = "(empty body)".to_owned();
        }
        HubError::Status {
            url: url.to_owned(),
            status,
            attempts,
            body,
        }
    }

    /// Fails on any non-2xx status, else parses the JSON body.
    pub(super) fn json<T: DeserializeOwned>(
        &self,
        url: &str,
        response: Response,
    ) -> Result<T, HubError> {
        if !response.status().is_success() {
            return Err(self.status_error(url, response, 1));
        }
        let text = response.text().map_err(|e| HubError::Protocol {
            url: url.to_owned(),
            message: error_chain(&e),
        })?;
        serde_json::from_str(&text).map_err(|e| HubError::Protocol {
            url: url.to_owned(),
            message: format!("{e} in `{}`", text.chars().take(200).collect::<String>()),
        })
    }
}

/// Percent-encodes one URL path segment (a branch name may contain `/`).
pub(super) fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path for messages about a file being read for upload.
pub(super) fn read_error(path: &str) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Read {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_encoded() {
        assert_eq!(encode_segment("main"), "main");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
    }
}

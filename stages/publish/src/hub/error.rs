//! Why a hub operation failed, phrased so that the user knows what to do next.

use std::path::PathBuf;

use super::token::TokenSource;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "no Hugging Face token: set HF_TOKEN or save a token with write access to {}",
        .looked_in.display()
    )]
    NoToken { looked_in: PathBuf },
    #[error(
        "{url}: the hub refused the token from {source_of_token} (HTTP {status}); fix: use a token with write access to `{repo}`"
    )]
    Auth {
        status: u16,
        url: String,
        repo: String,
        source_of_token: TokenSource,
    },
    #[error(
        "{url}: not found (HTTP 404); fix: check that `{repo}` is spelled right, that its owner exists and that branch `{revision}` exists"
    )]
    NotFound {
        url: String,
        repo: String,
        revision: String,
    },
    #[error("{url}: HTTP {status} after {attempts} attempt(s): {body}")]
    Status {
        url: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("{url}: {message} after {attempts} attempt(s); fix: check the network and HF_ENDPOINT")]
    Transport {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error("{url}: unexpected answer from the hub: {message}")]
    Protocol { url: String, message: String },
    #[error("LFS upload of `{path}` refused by the hub: {message}")]
    LfsObject { path: String, message: String },
    #[error("reading `{path}` to upload it: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the HTTP client: {0}")]
    Client(String),
}

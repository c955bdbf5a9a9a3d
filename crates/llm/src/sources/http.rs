//! The HTTPS client the model sources share (see tigerflow-https), with their error type.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::Client;

use super::SourceError;

pub use tigerflow_https::error_chain;

/// A blocking client trusting the system store and `SSL_CERT_FILE`, for downloads of up to an
/// hour.
pub fn client() -> Result<Client, SourceError> {
    let ssl_cert_file = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    tigerflow_https::client(Duration::from_secs(3600), ssl_cert_file.as_deref())
        .map_err(SourceError::Network)
}

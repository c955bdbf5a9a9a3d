//! The HTTPS client that model downloads and hub publishing share. It trusts the system store,
//! plus the PEM bundle named by `SSL_CERT_FILE` (networks with TLS inspection install their CA
//! there).
//!
//! rustls' platform verifier reads the system store, but when `SSL_CERT_FILE` is set it reads
//! that file *instead*; so in that case the system bundles are added back explicitly.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use reqwest::Certificate;
use reqwest::blocking::Client;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The system directories that hold CA bundles, on the distributions rustls-native-certs knows.
const SYSTEM_CERT_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted/pem",
    "/etc/ssl",
    "/usr/local/share/certs",
];

/// A blocking client with tigerflow's user agent, a 30 s connect timeout, `timeout` for whole
/// requests, and the trust settings above (`ssl_cert_file`: the value of `SSL_CERT_FILE`).
pub fn client(timeout: Duration, ssl_cert_file: Option<&Path>) -> Result<Client, String> {
    install_crypto_provider();
    Client::builder()
        .user_agent(concat!("tigerflow/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .tls_certs_merge(extra_roots(ssl_cert_file)?)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// An error with its causes: reqwest's top-level message is terse ("error sending request"),
/// the causes say why.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Installs ring as rustls' process-wide crypto provider, once. reqwest is built without its
/// own provider (aws-lc-rs needs cmake to build).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the process may have installed one already; that one is fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Extra roots to merge into the platform verifier: empty unless `SSL_CERT_FILE` is set.
fn extra_roots(ssl_cert_file: Option<&Path>) -> Result<Vec<Certificate>, String> {
    let Some(file) = ssl_cert_file else {
        return Ok(Vec::new());
    };
    let mut ders = read_pem(file).map_err(|e| {
        format!(
            "SSL_CERT_FILE={}: {e}; fix: point it at a PEM bundle or unset it",
            file.display()
        )
    })?;
    for bundle in system_bundles() {
        // A system bundle that does not parse is skipped, as the platform verifier would.
        ders.extend(read_pem(&bundle).unwrap_or_default());
    }
    ders.into_iter()
        .map(|der| {
            Certificate::from_der(der.as_ref()).map_err(|e| format!("a root certificate: {e}"))
        })
        .collect()
}

fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

/// The `*.crt`/`*.pem` files directly in the system certificate directories.
fn system_bundles() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in SYSTEM_CERT_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_cert = path
                .extension()
                .is_some_and(|ext| ext == "crt" || ext == "pem");
            if is_cert && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_env_no_extra_roots() {
        assert!(extra_roots(None).unwrap().is_empty());
    }

    #[test]
    fn unreadable_bundle_names_the_variable() {
        let err = extra_roots(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            err.starts_with("SSL_CERT_FILE=/nonexistent/ca.pem"),
            "{err}"
        );
    }
}

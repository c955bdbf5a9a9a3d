//! The HTTPS client the model sources share: rustls with the platform's certificate store, plus
//! the bundle named by `SSL_CERT_FILE` (networks with TLS inspection install their CA there).

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use reqwest::Certificate;
use reqwest::blocking::Client;

use super::SourceError;

/// Directories whose `*.crt`/`*.pem` bundles form the system store on Linux distributions.
const SYSTEM_CERT_DIRS: &[&str] = &[
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust/extracted/pem",
];

fn pem_bundle(path: &Path) -> Result<Vec<Certificate>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Certificate::from_pem_bundle(&bytes).map_err(|e| e.to_string())
}

/// Roots to add to the platform verifier. When `SSL_CERT_FILE` is set the platform verifier
/// reads that file instead of the system store, so the system bundles are added back.
fn extra_roots() -> Result<Vec<Certificate>, SourceError> {
    let Some(file) = std::env::var_os("SSL_CERT_FILE") else {
        return Ok(Vec::new());
    };
    let file = Path::new(&file);
    let mut roots = pem_bundle(file).map_err(|e| {
        SourceError::Network(format!(
            "SSL_CERT_FILE={}: {e}; fix: point it at a PEM bundle or unset it",
            file.display()
        ))
    })?;
    for dir in SYSTEM_CERT_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "crt" || x == "pem") && path.is_file() {
                // A bundle that does not parse is skipped, as the platform verifier does.
                roots.extend(pem_bundle(&path).unwrap_or_default());
            }
        }
    }
    Ok(roots)
}

/// A blocking client with tigerflow's user agent and trust settings.
pub fn client() -> Result<Client, SourceError> {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // reqwest is built without a crypto provider of its own; another part of the process
        // may already have installed one, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Client::builder()
        .user_agent(concat!("tigerflow/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(3600))
        .tls_certs_merge(extra_roots()?)
        .build()
        .map_err(|e| SourceError::Network(format!("cannot build the HTTP client: {e}")))
}

/// Formats an error with its causes, which is where reqwest keeps the useful part.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

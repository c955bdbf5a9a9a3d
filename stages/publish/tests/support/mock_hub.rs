//! An in-process stand-in for the Hugging Face Hub: the endpoints publishing uses, with
//! recorded requests and injectable faults. HTTP/1.1 over std's TcpListener, one request per
//! connection, so that a fault can cut a connection mid-body.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub(crate) const TOKEN: &str = "hf_test_token";

#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum FaultKind {
    Status(u16),
    /// Reads half of the body, then closes the connection without answering.
    DropMidBody,
}

struct Fault {
    method: &'static str,
    path_prefix: String,
    kind: FaultKind,
    remaining: u32,
}

#[derive(Default)]
pub(crate) struct State {
    /// `datasets/owner/name` or `owner/name` → path → oid (git blob id or sha256).
    pub repos: BTreeMap<String, BTreeMap<String, String>>,
    /// The `private` flag each repository was created with.
    pub private: BTreeMap<String, bool>,
    pub lfs: BTreeMap<String, Vec<u8>>,
    parts: BTreeMap<(String, u32), Vec<u8>>,
    pub requests: Vec<Recorded>,
    faults: Vec<Fault>,
    /// LFS objects larger than this are uploaded in parts of `chunk_size`.
    pub multipart_above: u64,
    pub chunk_size: u64,
    pub commits: Vec<Vec<Value>>,
}

pub(crate) struct MockHub {
    /// The API endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockHub {
    pub(crate) fn start() -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            multipart_above: u64::MAX,
            chunk_size: 1024,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        // The same server under another host name stands for the storage bucket that LFS
        // uploads go to; the client must not send it the token.
        let storage = format!("http://localhost:{port}");
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &state, &storage);
                    }
                }
            })
        };
        MockHub {
            endpoint: format!("http://127.0.0.1:{port}"),
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// The next `times` requests whose method and path match fail with `kind`.
    pub(crate) fn fail(
        &self,
        method: &'static str,
        path_prefix: &str,
        kind: FaultKind,
        times: u32,
    ) {
        self.state().faults.push(Fault {
            method,
            path_prefix: path_prefix.to_owned(),
            kind,
            remaining: times,
        });
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Head {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some(Head {
        method,
        path,
        headers,
    })
}

fn read_body(reader: &mut BufReader<TcpStream>, head: &Head) -> Vec<u8> {
    let mut body = Vec::new();
    if head
        .headers
        .get("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let len: usize = head
        .headers
        .get("content-length")
        .map_or(0, |v| v.parse().unwrap());
    body.resize(len, 0);
    reader.read_exact(&mut body).unwrap();
    body
}

fn serve(stream: TcpStream, state: &Mutex<State>, storage: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(head) = read_head(&mut reader) else {
        return;
    };
    let fault = {
        let mut state = state.lock().unwrap();
        let found = state.faults.iter_mut().find(|f| {
            f.remaining > 0 && f.method == head.method && head.path.starts_with(&f.path_prefix)
        });
        found.map(|f| {
            f.remaining -= 1;
            f.kind
        })
    };
    if let Some(FaultKind::DropMidBody) = fault {
        let len: usize = head
            .headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut half = vec![0; len / 2];
        let _ = reader.read_exact(&mut half);
        state.lock().unwrap().requests.push(Recorded {
            method: head.method,
            path: head.path,
            headers: head.headers,
            body: half,
        });
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let body = read_body(&mut reader, &head);
    let request = Recorded {
        method: head.method,
        path: head.path,
        headers: head.headers,
        body,
    };
    let mut state = state.lock().unwrap();
    state.requests.push(request.clone());
    let (status, headers, body) = match fault {
        Some(FaultKind::Status(status)) => {
            (status, vec![], json!({"error": "injected"}).to_string())
        }
        _ => route(&mut state, &request, storage),
    };
    drop(state);
    respond(stream, status, &headers, &body);
}

fn respond(mut stream: TcpStream, status: u16, headers: &[(String, String)], body: &str) {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

type Reply = (u16, Vec<(String, String)>, String);

fn ok(body: Value) -> Reply {
    (200, vec![], body.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn git_blob_id(bytes: &[u8]) -> String {
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_lfs_path(path: &str) -> bool {
    path.ends_with(".parquet") || path.ends_with(".safetensors")
}

fn route(state: &mut State, request: &Recorded, storage: &str) -> Reply {
    let path = request.path.as_str();
    if path.starts_with("/lfs-upload/") || path.starts_with("/lfs-complete/") {
        return storage_route(state, request);
    }
    if request.header("authorization") != Some(format!("Bearer {TOKEN}").as_str()) {
        return (
            401,
            vec![],
            json!({"error": "Invalid credentials"}).to_string(),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["api", "repos", "create"]) => {
            let body = request.json();
            let prefix = if body["type"] == "dataset" {
                "datasets/"
            } else {
                ""
            };
            let repo = format!(
                "{prefix}{}/{}",
                body["organization"].as_str().unwrap(),
                body["name"].as_str().unwrap()
            );
            if state.repos.contains_key(&repo) {
                return (
                    409,
                    vec![],
                    json!({"error": "You already created this repo"}).to_string(),
                );
            }
            state.repos.insert(repo.clone(), BTreeMap::new());
            state
                .private
                .insert(repo.clone(), body["private"].as_bool().unwrap());
            ok(json!({ "url": format!("https://hub/{repo}") }))
        }
        ("POST", ["api", kind, owner, name, "preupload", _rev]) => {
            let repo = repo_key(kind, owner, name);
            let Some(files) = state.repos.get(&repo) else {
                return (
                    404,
                    vec![],
                    json!({"error": "Repository not found"}).to_string(),
                );
            };
            let answers: Vec<Value> = request.json()["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap();
                    let mut answer = json!({
                        "path": path,
                        "uploadMode": if is_lfs_path(path) { "lfs" } else { "regular" },
                        "shouldIgnore": false,
                    });
                    if let Some(oid) = files.get(path) {
                        answer["oid"] = json!(oid);
                    }
                    answer
                })
                .collect();
            ok(json!({ "files": answers }))
        }
        ("POST", [.., "info", "lfs", "objects", "batch"]) => {
            let objects: Vec<Value> = request.json()["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    let oid = o["oid"].as_str().unwrap().to_owned();
                    let size = o["size"].as_u64().unwrap();
                    if state.lfs.contains_key(&oid) {
                        return json!({ "oid": oid, "size": size });
                    }
                    let verify = json!({ "href": format!("{}/api/lfs-verify", request_endpoint(request)) });
                    let upload = if size > state.multipart_above {
                        let mut header = json!({ "chunk_size": state.chunk_size.to_string() });
                        for part in 1..=size.div_ceil(state.chunk_size) {
                            header[part.to_string()] =
                                json!(format!("{storage}/lfs-upload/{oid}/part/{part}"));
                        }
                        json!({ "href": format!("{storage}/lfs-complete/{oid}"), "header": header })
                    } else {
                        json!({ "href": format!("{storage}/lfs-upload/{oid}") })
                    };
                    json!({ "oid": oid, "size": size, "actions": { "upload": upload, "verify": verify } })
                })
                .collect();
            ok(json!({ "transfer": "basic", "objects": objects }))
        }
        ("POST", ["api", "lfs-verify"]) => {
            let body = request.json();
            match state.lfs.get(body["oid"].as_str().unwrap()) {
                Some(bytes) if bytes.len() as u64 == body["size"].as_u64().unwrap() => {
                    ok(json!({}))
                }
                _ => (422, vec![], json!({"error": "object missing"}).to_string()),
            }
        }
        ("POST", ["api", kind, owner, name, "commit", _rev]) => {
            let repo = repo_key(kind, owner, name);
            let lines: Vec<Value> = request
                .body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap())
                .collect();
            let mut updates = Vec::new();
            for line in &lines {
                let value = &line["value"];
                match line["key"].as_str().unwrap() {
                    "file" => {
                        let content = BASE64.decode(value["content"].as_str().unwrap()).unwrap();
                        updates.push((
                            value["path"].as_str().unwrap().to_owned(),
                            git_blob_id(&content),
                        ));
                    }
                    "lfsFile" => {
                        let oid = value["oid"].as_str().unwrap();
                        if !state.lfs.contains_key(oid) {
                            return (
                                422,
                                vec![],
                                json!({"error": format!("missing LFS object {oid}")}).to_string(),
                            );
                        }
                        updates.push((value["path"].as_str().unwrap().to_owned(), oid.to_owned()));
                    }
                    _ => {}
                }
            }
            let files = state.repos.get_mut(&repo).unwrap();
            files.extend(updates);
            state.commits.push(lines);
            let oid = format!("{:040x}", state.commits.len());
            ok(json!({ "commitUrl": format!("https://hub/{repo}/commit/{oid}"), "commitOid": oid }))
        }
        _ => (
            404,
            vec![],
            json!({"error": format!("no route {path}")}).to_string(),
        ),
    }
}

fn storage_route(state: &mut State, request: &Recorded) -> Reply {
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("PUT", ["lfs-upload", oid]) => {
            if sha256_hex(&request.body) != *oid {
                return (400, vec![], "sha256 mismatch".to_owned());
            }
            state.lfs.insert(oid.to_string(), request.body.clone());
            (200, vec![], String::new())
        }
        ("PUT", ["lfs-upload", oid, "part", part]) => {
            let part: u32 = part.parse().unwrap();
            state
                .parts
                .insert((oid.to_string(), part), request.body.clone());
            let etag = format!("\"etag-{part}-{}\"", &sha256_hex(&request.body)[..8]);
            (200, vec![("ETag".to_owned(), etag)], String::new())
        }
        ("POST", ["lfs-complete", oid]) => {
            let body = request.json();
            let mut bytes = Vec::new();
            for (index, part) in body["parts"].as_array().unwrap().iter().enumerate() {
                let number = part["partNumber"].as_u64().unwrap() as u32;
                assert_eq!(number as usize, index + 1, "parts in order");
                let chunk = &state.parts[&(oid.to_string(), number)];
                let etag = format!("\"etag-{number}-{}\"", &sha256_hex(chunk)[..8]);
                assert_eq!(part["etag"].as_str().unwrap(), etag);
                bytes.extend_from_slice(chunk);
            }
            if sha256_hex(&bytes) != *oid {
                return (400, vec![], "assembled sha256 mismatch".to_owned());
            }
            state.lfs.insert(oid.to_string(), bytes);
            (200, vec![], String::new())
        }
        _ => (404, vec![], String::new()),
    }
}

fn repo_key(kind: &str, owner: &str, name: &str) -> String {
    if kind == "datasets" {
        format!("datasets/{owner}/{name}")
    } else {
        format!("{owner}/{name}")
    }
}

/// `http://HOST` of the request, from its Host header.
fn request_endpoint(request: &Recorded) -> String {
    format!("http://{}", request.header("host").unwrap())
}

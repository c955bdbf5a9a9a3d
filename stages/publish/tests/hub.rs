//! The hub client against an in-process hub: what it sends, and how it copes with refusals,
//! rate limits, server errors and dropped connections.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::mock_hub::{FaultKind, MockHub, TOKEN};
use support::{RecordingReporter, receipt, run_stage};
use tigerflow_publish::hub::{HubConfig, RetryPolicy, Token};
use tigerflow_publish::{HubAccess, Push, Upload};

fn config(hub: &MockHub, token: &str) -> HubConfig {
    let mut config = HubConfig::new(hub.endpoint.clone(), Token::new(token));
    config.retry = RetryPolicy {
        attempts: 3,
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    config.timeout = Duration::from_secs(20);
    config
}

fn upload_stage(hub: &MockHub) -> Upload {
    Upload {
        hub: HubAccess::Fixed(config(hub, TOKEN)),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A split output with binary "parquet" files (their content does not matter to the hub).
fn split_dir(root: &Path, train_size: usize) -> PathBuf {
    let dir = root.join("split");
    std::fs::create_dir_all(&dir).unwrap();
    let train: Vec<u8> = (0..train_size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("train.parquet"), &train).unwrap();
    std::fs::write(dir.join("test.parquet"), b"PAR1\0test\0PAR1").unwrap();
    std::fs::write(dir.join("train.jsonl"), "{\"text\":\"### A: hi\"}\n").unwrap();
    std::fs::write(dir.join("test.jsonl"), "{\"text\":\"### B: yo\"}\n").unwrap();
    std::fs::write(
        dir.join("report.json"),
        r#"{"train_rows": 1, "test_rows": 1}"#,
    )
    .unwrap();
    dir
}

const PARAMS: &str = r#"target = "hf:alice/chat-data""#;

fn commit_lines(hub: &MockHub) -> Vec<Value> {
    hub.state().commits.last().cloned().expect("a commit")
}

#[test]
fn publishes_a_dataset_in_one_commit() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 3000);
    let hub = MockHub::start();
    let reporter = RecordingReporter::default();
    let (out, result) = run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split.clone())],
        &reporter,
    );
    result.unwrap();

    let requests = hub.requests();
    let paths: Vec<_> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let train = std::fs::read(split.join("train.parquet")).unwrap();
    let test = std::fs::read(split.join("test.parquet")).unwrap();
    let expected = [
        "POST /api/repos/create".to_owned(),
        "POST /api/datasets/alice/chat-data/preupload/main".to_owned(),
        "POST /datasets/alice/chat-data.git/info/lfs/objects/batch".to_owned(),
        format!("PUT /lfs-upload/{}", sha256_hex(&train)),
        "POST /api/lfs-verify".to_owned(),
        format!("PUT /lfs-upload/{}", sha256_hex(&test)),
        "POST /api/lfs-verify".to_owned(),
        "POST /api/datasets/alice/chat-data/commit/main".to_owned(),
    ];
    assert_eq!(paths, expected);

    // The token goes to the hub, never to the storage URLs.
    for request in &requests {
        let auth = request.header("authorization");
        if request.path.starts_with("/lfs-upload/") {
            assert_eq!(auth, None, "{}", request.path);
        } else {
            assert_eq!(
                auth,
                Some(format!("Bearer {TOKEN}").as_str()),
                "{}",
                request.path
            );
        }
    }

    let create = requests[0].json();
    assert_eq!(create["name"], "chat-data");
    assert_eq!(create["organization"], "alice");
    assert_eq!(create["type"], "dataset");
    assert_eq!(create["private"], true);
    assert_eq!(create["visibility"], "private");

    let preupload = requests[1].json();
    let files = preupload["files"].as_array().unwrap();
    let train_file = files
        .iter()
        .find(|f| f["path"] == "data/train-00000-of-00001.parquet")
        .unwrap();
    assert_eq!(train_file["size"], 3000);
    assert_eq!(
        BASE64
            .decode(train_file["sample"].as_str().unwrap())
            .unwrap(),
        &train[..512]
    );

    let batch = requests[2].json();
    assert_eq!(
        requests[2].header("content-type"),
        Some("application/vnd.git-lfs+json")
    );
    assert_eq!(batch["operation"], "upload");
    assert_eq!(batch["hash_algo"], "sha256");
    assert_eq!(batch["ref"]["name"], "main");
    let objects = batch["objects"].as_array().unwrap();
    assert!(
        objects
            .iter()
            .any(|o| o["oid"] == sha256_hex(&train) && o["size"] == 3000)
    );
    assert!(
        objects
            .iter()
            .any(|o| o["oid"] == sha256_hex(&test) && o["size"] == test.len())
    );
    let put = requests
        .iter()
        .find(|r| r.path == format!("/lfs-upload/{}", sha256_hex(&train)))
        .unwrap();
    assert_eq!(put.body, train);

    let commit = requests.last().unwrap();
    assert_eq!(commit.header("content-type"), Some("application/x-ndjson"));
    let lines = commit_lines(&hub);
    assert_eq!(lines[0]["key"], "header");
    let summary = lines[0]["value"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("stage `upload`") && summary.contains("content "),
        "{summary}"
    );
    let regular: Vec<_> = lines.iter().filter(|l| l["key"] == "file").collect();
    let jsonl = regular
        .iter()
        .find(|l| l["value"]["path"] == "jsonl/train.jsonl")
        .unwrap();
    assert_eq!(jsonl["value"]["encoding"], "base64");
    assert_eq!(
        BASE64
            .decode(jsonl["value"]["content"].as_str().unwrap())
            .unwrap(),
        std::fs::read(split.join("train.jsonl")).unwrap()
    );
    let readme = regular
        .iter()
        .find(|l| l["value"]["path"] == "README.md")
        .unwrap();
    let card = String::from_utf8(
        BASE64
            .decode(readme["value"]["content"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        card.contains("path: data/train-*") && card.contains("| train_rows | 1 |"),
        "{card}"
    );
    let lfs: Vec<_> = lines.iter().filter(|l| l["key"] == "lfsFile").collect();
    assert_eq!(lfs.len(), 2);
    let train_line = lfs
        .iter()
        .find(|l| l["value"]["path"] == "data/train-00000-of-00001.parquet")
        .unwrap();
    assert_eq!(train_line["value"]["oid"], sha256_hex(&train));
    assert_eq!(train_line["value"]["size"], 3000);
    assert_eq!(train_line["value"]["algo"], "sha256");

    let receipt = receipt(&out);
    assert_eq!(receipt["changed"], true);
    assert_eq!(receipt["commit"]["commitOid"], format!("{:040x}", 1));
    assert_eq!(
        receipt["location"],
        format!("{}/datasets/alice/chat-data", hub.endpoint)
    );
    assert!(
        !std::fs::read_to_string(out.join("published.json"))
            .unwrap()
            .contains(TOKEN)
    );
    assert_eq!(
        reporter.positions.lock().unwrap().last(),
        Some(&(3000 + test.len() as u64))
    );
}

#[test]
fn a_second_publish_of_the_same_content_commits_nothing() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 2000);
    let hub = MockHub::start();
    let reporter = RecordingReporter::default();
    let inputs = [("dataset", split)];
    run_stage(&upload_stage(&hub), root.path(), PARAMS, &inputs, &reporter)
        .1
        .unwrap();
    let before = hub.requests().len();

    let (out, result) = run_stage(&upload_stage(&hub), root.path(), PARAMS, &inputs, &reporter);
    result.unwrap();
    let again: Vec<_> = hub.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    // 409 on create (the repo exists), then preupload finds every oid unchanged.
    assert_eq!(
        again,
        [
            "POST /api/repos/create",
            "POST /api/datasets/alice/chat-data/preupload/main",
        ]
    );
    assert_eq!(hub.state().commits.len(), 1);
    let receipt = receipt(&out);
    assert_eq!(receipt["changed"], false);
    assert_eq!(receipt["commit"], Value::Null);
    assert!(
        receipt["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["fate"] == "unchanged")
    );
}

#[test]
fn objects_the_hub_already_has_are_not_sent_again() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 2000);
    let train = std::fs::read(split.join("train.parquet")).unwrap();
    let hub = MockHub::start();
    hub.state().lfs.insert(sha256_hex(&train), train.clone());
    let (out, result) = run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    );
    result.unwrap();
    let puts: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "only test.parquet travels");
    assert_ne!(puts[0].path, format!("/lfs-upload/{}", sha256_hex(&train)));
    let lines = commit_lines(&hub);
    assert!(
        lines
            .iter()
            .any(|l| l["key"] == "lfsFile" && l["value"]["oid"] == sha256_hex(&train))
    );
    let receipt = receipt(&out);
    let fate = |path: &str| {
        receipt["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap()["fate"]
            .clone()
    };
    assert_eq!(fate("data/train-00000-of-00001.parquet"), "reused");
    assert_eq!(fate("data/test-00000-of-00001.parquet"), "uploaded");
    assert_eq!(fate("README.md"), "committed");
}

#[test]
fn large_objects_go_up_in_parts() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 2500);
    let train = std::fs::read(split.join("train.parquet")).unwrap();
    let hub = MockHub::start();
    {
        let mut state = hub.state();
        state.multipart_above = 1000;
        state.chunk_size = 1024;
    }
    run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    )
    .1
    .unwrap();
    let oid = sha256_hex(&train);
    let requests = hub.requests();
    let parts: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with(&format!("/lfs-upload/{oid}/part/")))
        .collect();
    let sizes: Vec<_> = parts.iter().map(|p| p.body.len()).collect();
    assert_eq!(sizes, [1024, 1024, 452]);
    assert_eq!(
        parts
            .iter()
            .flat_map(|p| p.body.clone())
            .collect::<Vec<_>>(),
        train
    );
    let complete = requests
        .iter()
        .find(|r| r.path == format!("/lfs-complete/{oid}"))
        .unwrap();
    let body = complete.json();
    assert_eq!(body["oid"], oid);
    let numbers: Vec<_> = body["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert!(
        body["parts"][0]["etag"]
            .as_str()
            .unwrap()
            .starts_with("\"etag-1-")
    );
    assert_eq!(hub.state().lfs[&oid], train);
}

#[test]
fn a_refused_token_fails_with_a_token_message_and_no_receipt() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 100);
    let hub = MockHub::start();
    let stage = Upload {
        hub: HubAccess::Fixed(config(&hub, "hf_wrong")),
    };
    let (out, result) = run_stage(
        &stage,
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    );
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 401") && err.contains("token") && err.contains("alice/chat-data"),
        "{err}"
    );
    assert!(!err.contains("hf_wrong"), "{err}");
    assert!(!out.join("published.json").exists());
    assert_eq!(hub.requests().len(), 1, "no retry on 401");
}

#[test]
fn a_missing_namespace_says_so() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 100);
    let hub = MockHub::start();
    hub.fail("POST", "/api/repos/create", FaultKind::Status(404), 1);
    let (_, result) = run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    );
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("`alice/chat-data` is spelled right"),
        "{err}"
    );
}

#[test]
fn an_existing_repository_409_is_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 100);
    let hub = MockHub::start();
    hub.state()
        .repos
        .insert("datasets/alice/chat-data".into(), Default::default());
    run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    )
    .1
    .unwrap();
    assert_eq!(hub.state().commits.len(), 1);
    assert!(
        !hub.state().private.contains_key("datasets/alice/chat-data"),
        "not re-created"
    );
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 100);
    let hub = MockHub::start();
    hub.fail(
        "POST",
        "/api/datasets/alice/chat-data/preupload",
        FaultKind::Status(429),
        1,
    );
    hub.fail(
        "POST",
        "/api/datasets/alice/chat-data/commit",
        FaultKind::Status(500),
        1,
    );
    let reporter = RecordingReporter::default();
    let (out, result) = run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &reporter,
    );
    result.unwrap();
    let count = |prefix: &str| {
        hub.requests()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    };
    assert_eq!(count("/api/datasets/alice/chat-data/preupload"), 2);
    assert_eq!(count("/api/datasets/alice/chat-data/commit"), 2);
    assert_eq!(hub.state().commits.len(), 1);
    let lines = reporter.lines.lock().unwrap().join("\n");
    assert!(
        lines.contains("HTTP 429; retrying") && lines.contains("HTTP 500; retrying"),
        "{lines}"
    );
    assert_eq!(receipt(&out)["changed"], true);
}

#[test]
fn a_connection_dropped_mid_upload_is_retried() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 200_000);
    let train = std::fs::read(split.join("train.parquet")).unwrap();
    let oid = sha256_hex(&train);
    let hub = MockHub::start();
    hub.fail(
        "PUT",
        &format!("/lfs-upload/{oid}"),
        FaultKind::DropMidBody,
        1,
    );
    run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    )
    .1
    .unwrap();
    let puts: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path == format!("/lfs-upload/{oid}"))
        .collect();
    assert_eq!(puts.len(), 2);
    assert!(puts[0].body.len() < train.len());
    assert_eq!(puts[1].body, train);
    assert_eq!(hub.state().lfs[&oid], train);
}

#[test]
fn a_failure_that_outlasts_the_retries_leaves_no_commit_and_no_receipt() {
    let root = tempfile::tempdir().unwrap();
    let split = split_dir(root.path(), 100);
    let hub = MockHub::start();
    let test = std::fs::read(split.join("test.parquet")).unwrap();
    hub.fail(
        "PUT",
        &format!("/lfs-upload/{}", sha256_hex(&test)),
        FaultKind::Status(503),
        10,
    );
    let (out, result) = run_stage(
        &upload_stage(&hub),
        root.path(),
        PARAMS,
        &[("dataset", split)],
        &RecordingReporter::default(),
    );
    let err = result.unwrap_err().to_string();
    assert!(err.contains("HTTP 503 after 3 attempt(s)"), "{err}");
    assert!(hub.state().commits.is_empty());
    assert!(hub.state().repos["datasets/alice/chat-data"].is_empty());
    assert!(!out.join("published.json").exists());
}

#[test]
fn push_publishes_a_model_repository() {
    let root = tempfile::tempdir().unwrap();
    let train = root.path().join("train");
    std::fs::create_dir_all(train.join("adapter")).unwrap();
    let weights: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(train.join("adapter/adapter_model.safetensors"), &weights).unwrap();
    std::fs::write(
        train.join("adapter/adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}"#,
    )
    .unwrap();
    let hub = MockHub::start();
    let stage = Push {
        hub: HubAccess::Fixed(config(&hub, TOKEN)),
    };
    let (out, result) = run_stage(
        &stage,
        root.path(),
        "target = \"hf:alice/adapter\"\nprivate = false\ncommit_message = \"first adapter\"",
        &[("adapter", train)],
        &RecordingReporter::default(),
    );
    result.unwrap();
    let requests = hub.requests();
    assert_eq!(requests[0].json()["type"], "model");
    assert_eq!(requests[0].json()["visibility"], "public");
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/alice/adapter.git/info/lfs/objects/batch")
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/api/models/alice/adapter/commit/main")
    );
    let lines = commit_lines(&hub);
    assert_eq!(lines[0]["value"]["summary"], "first adapter");
    let paths: Vec<_> = lines[1..]
        .iter()
        .map(|l| l["value"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "adapter_model.safetensors",
            "adapter_config.json",
            "README.md"
        ]
    );
    assert_eq!(
        hub.state().repos["alice/adapter"]["adapter_model.safetensors"],
        sha256_hex(&weights)
    );
    assert_eq!(
        receipt(&out)["location"],
        format!("{}/alice/adapter", hub.endpoint)
    );
}

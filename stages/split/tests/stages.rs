//! The three data stages through the `Stage` trait, as the engine runs them: parse → chunk →
//! split, each writing into its own output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tigerflow_chunk::ChunkStage;
use tigerflow_split::SplitStage;
use tigerflow_stage::{Context, Reporter, Stage, StageError};
use tigerflow_telegram::TelegramStage;

#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Reporter for Log {
    fn begin(&self, _step: &str, _total: Option<u64>, _unit: &str) {}
    fn set_position(&self, _position: u64) {}
    fn set_message(&self, _message: &str) {}
    fn log(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_owned());
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a stage with parameters from a TOML snippet; returns its output dir and log.
fn run(
    stage: &dyn Stage,
    params: &str,
    inputs: &[(&str, &Path)],
    out: &Path,
) -> Result<Vec<String>, StageError> {
    let raw: toml::Table = toml::from_str(params).unwrap();
    let params = stage
        .resolve_params(&raw)
        .map_err(|e| StageError::Failed(e.to_string()))?;
    std::fs::create_dir_all(out).unwrap();
    let log = Log::default();
    let root = root();
    let mut ctx = Context {
        stage_name: stage.kind(),
        params: &params,
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_path_buf()))
            .collect::<BTreeMap<_, _>>(),
        out_dir: out,
        root: &root,
        cache_dir: out,
        reporter: &log,
    };
    stage.run(&mut ctx)?;
    for output in stage.outputs(&params) {
        assert!(out.join(&output).exists(), "{} missing", output.display());
    }
    Ok(log.0.into_inner().unwrap())
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_sample_export_becomes_a_split_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (parse, chunk, split) = (
        dir.path().join("parse"),
        dir.path().join("chunk"),
        dir.path().join("split"),
    );
    let export = root().join("data/sample-export/result.json");
    let log = run(&TelegramStage, "", &[("export", &export)], &parse).unwrap();
    assert!(log[0].contains("4815162342"), "{log:?}");
    let report = json(&parse.join("report.json"));
    assert!(report["parse"]["unsupported"].as_u64().unwrap() > 0);
    assert!(report["parse"]["repaired_escapes"].as_u64().unwrap() > 0);

    run(&ChunkStage, "", &[("messages", &parse)], &chunk).unwrap();
    let samples = lines(&chunk.join("dataset.jsonl"));
    assert!(samples.len() > 100, "{}", samples.len());
    assert!(
        samples
            .iter()
            .all(|s| s.starts_with("### ") && s.chars().count() <= 2048)
    );
    let report = json(&chunk.join("report.json"));
    assert!(
        report["authors"]["Deleted Account"]["messages"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(report["authors"]["Bruno Costa"].is_object());
    assert!(
        report["authors"].get("Bruno").is_none(),
        "renamed people carry their latest name"
    );

    run(&SplitStage, "", &[("dataset", &chunk)], &split).unwrap();
    let (train, test) = (
        lines(&split.join("train.jsonl")),
        lines(&split.join("test.jsonl")),
    );
    assert_eq!(train.len() + test.len(), samples.len());
    assert_eq!(test.len(), tigerflow_split::test_count(samples.len(), 0.15));
    let mut all: Vec<_> = train.iter().chain(&test).cloned().collect();
    let mut expected = samples.clone();
    all.sort();
    expected.sort();
    assert_eq!(all, expected);

    // Deterministic: a second run writes the same files.
    let again = dir.path().join("again");
    run(&SplitStage, "", &[("dataset", &chunk)], &again).unwrap();
    assert_eq!(lines(&again.join("train.jsonl")), train);
}

fn export_of(messages: &[(i64, &str, &str)]) -> String {
    let body: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, (time, who, text))| {
            format!(
                r#"{{"id": {}, "type": "message", "date_unixtime": "{time}", "from": "{who}", "from_id": "user{}", "text": "{text}"}}"#,
                i + 1,
                who.len()
            )
        })
        .collect();
    format!(
        r#"{{"name": "t", "type": "private_group", "id": 1, "messages": [{}]}}"#,
        body.join(",")
    )
}

fn chunk_texts(export: &str, params: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result.json");
    std::fs::write(&file, export).unwrap();
    let (parse, chunk) = (dir.path().join("parse"), dir.path().join("chunk"));
    run(&TelegramStage, "", &[("export", &file)], &parse).unwrap();
    run(&ChunkStage, params, &[("messages", &parse)], &chunk).unwrap();
    lines(&chunk.join("dataset.jsonl"))
}

#[test]
fn conversations_break_at_the_session_gap_in_the_reference_format() {
    let export = export_of(&[
        (1000, "Alice", "first message"),
        (1060, "Bob", "reply"),
        (1000 + 3601 + 60, "Alice", "later"),
        (1000 + 3601 + 120, "Bob", "much later"),
    ]);
    assert_eq!(
        chunk_texts(&export, ""),
        [
            "### Alice: first message### Bob: reply",
            "### Alice: later### Bob: much later"
        ]
    );
    assert_eq!(chunk_texts(&export, "session_gap = \"2h\"").len(), 1);
}

#[test]
fn merging_pseudonyms_and_scrubbing() {
    let export = export_of(&[
        (1000, "Alice", "oi"),
        (1010, "Alice", "mail me at a@b.com"),
        (1020, "Bob", "ok"),
    ]);
    assert_eq!(
        chunk_texts(
            &export,
            "merge_consecutive = true\nspeakers = \"pseudonyms\"\nscrub = [\"email\"]\nmin_messages = 1"
        ),
        ["### Friend 1: oi\nmail me at <email>### Friend 2: ok"]
    );
}

#[test]
fn short_conversations_are_dropped_and_an_empty_result_is_an_error() {
    let export = export_of(&[(1000, "Alice", "alone"), (90_000, "Bob", "also alone")]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result.json");
    std::fs::write(&file, export).unwrap();
    let (parse, chunk) = (dir.path().join("parse"), dir.path().join("chunk"));
    run(&TelegramStage, "", &[("export", &file)], &parse).unwrap();
    let err = run(&ChunkStage, "", &[("messages", &parse)], &chunk).unwrap_err();
    assert!(err.to_string().contains("lower `min_messages`"), "{err}");
}

#[test]
fn bad_input_names_the_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("result.json");
    std::fs::write(
        &file,
        "{\"messages\": [{\"id\": 3, \"type\": \"message\", \"text\": \"x\"}]}",
    )
    .unwrap();
    let err = run(
        &TelegramStage,
        "",
        &[("export", &file)],
        &dir.path().join("parse"),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with(&file.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("line 1, column 55: message 3 has no `date`"),
        "{message}"
    );
}

#[test]
fn parameters_are_validated_with_their_key() {
    let raw: toml::Table = toml::from_str("test_size = 1.5").unwrap();
    let err = SplitStage.resolve_params(&raw).unwrap_err();
    assert_eq!(err.path, ["test_size"]);
    let raw: toml::Table = toml::from_str("strategy = \"sessions\"").unwrap();
    assert_eq!(
        SplitStage.resolve_params(&raw).unwrap_err().path,
        ["strategy"]
    );
    let raw: toml::Table = toml::from_str("utc_offset = \"3\"").unwrap();
    assert_eq!(
        TelegramStage.resolve_params(&raw).unwrap_err().path,
        ["utc_offset"]
    );
}

//! The `train` stage end to end on a tiny model: parameters from TOML, a split directory,
//! and every declared output, with a PEFT directory that loads back.

use std::collections::BTreeMap;
use std::path::Path;

use tigerflow_llm::peft::PeftAdapter;
use tigerflow_stage::{Context, Registry, Reporter};

struct Quiet;

impl Reporter for Quiet {
    fn begin(&self, _: &str, _: Option<u64>, _: &str) {}
    fn set_position(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn log(&self, _: &str) {}
}

fn write_split(dir: &Path) {
    let line = |i: usize| {
        format!(
            "{{\"text\": \"### Ana: Olá {i}, tudo bem?\\n### SZ: Tudo, e contigo? Vemo-nos em Lisboa.\"}}\n"
        )
    };
    std::fs::write(
        dir.join("train.jsonl"),
        (0..12).map(line).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        dir.join("test.jsonl"),
        (12..15).map(line).collect::<String>(),
    )
    .unwrap();
}

const MODEL: &str = "llm/tests/fixtures/gqa_tied";

/// Runs the train stage on a tiny model and a split directory, with `extra` TOML parameters;
/// returns its result, its parameters and the work directory (the output is `out` in it).
fn run_stage(
    extra: &str,
) -> (
    Result<(), tigerflow_stage::StageError>,
    serde_json::Value,
    tempfile::TempDir,
) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates");
    let work = tempfile::tempdir().unwrap();
    let split = work.path().join("split");
    std::fs::create_dir(&split).unwrap();
    write_split(&split);
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();

    let mut registry = Registry::new();
    tigerflow_train::register(&mut registry);
    let stage = registry.get("train").unwrap();
    let raw: toml::Table = toml::from_str(&format!(
        "base_model = \"{MODEL}\"\nsequence_len = 64\nlora_r = 4\nmax_steps = 4\nwarmup_steps = 1\nlearning_rate = 1e-2\neval_steps = 2\nmicro_batch_size = 2\ngradient_accumulation_steps = 2\n{extra}"
    ))
    .unwrap();
    let params = stage.resolve_params(&raw).unwrap();
    let mut ctx = Context {
        stage_name: "train",
        params: &params,
        inputs: BTreeMap::from([("data".to_owned(), split.clone())]),
        out_dir: &out,
        root: &root,
        cache_dir: work.path(),
        reporter: &Quiet,
    };
    let result = stage.run(&mut ctx);
    (result, params, work)
}

#[test]
fn train_stage_writes_a_peft_adapter_metrics_and_curves() {
    let (result, params, work) = run_stage("");
    result.unwrap();
    let out = work.path().join("out");
    let mut registry = Registry::new();
    tigerflow_train::register(&mut registry);
    let stage = registry.get("train").unwrap();
    assert_eq!(params["lora_alpha"], 16.0, "defaults are filled in");
    assert!(stage.resumable());
    assert_eq!(
        stage.extra_dependencies(&params),
        vec![Path::new(MODEL).to_path_buf()]
    );
    for output in stage.outputs(&params) {
        assert!(
            out.join(&output).exists(),
            "missing output {}",
            output.display()
        );
    }
    let adapter = PeftAdapter::load(&out.join("adapter")).unwrap();
    assert_eq!(adapter.config.r, 4);
    assert_eq!(
        adapter.config.base_model_name_or_path.as_deref(),
        Some(MODEL)
    );
    let first = adapter.modules.keys().next().unwrap();
    assert_eq!(first, "model.layers.0.mlp.down_proj");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_report.json")).unwrap())
            .unwrap();
    assert_eq!(report["steps"], 4);
    assert!(
        std::fs::read_to_string(out.join("loss.svg"))
            .unwrap()
            .contains("<svg")
    );
    let card = std::fs::read_to_string(out.join("adapter/README.md")).unwrap();
    assert!(card.contains("base_model: llm/tests/fixtures/gqa_tied"));
}

/// A list of one device is that device, not `device`'s: here a GPU that a CPU-only build cannot
/// use, where training on `device = "cpu"` would succeed.
#[cfg(not(feature = "cuda"))]
#[test]
fn one_listed_device_is_the_device_trained_on() {
    let (result, _, _) = run_stage("devices = [\"cuda:1\"]");
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("cuda:1") && err.contains("--features cuda"),
        "{err}"
    );
}

#[test]
fn bad_parameters_name_the_key() {
    let mut registry = Registry::new();
    tigerflow_train::register(&mut registry);
    let stage = registry.get("train").unwrap();
    let raw: toml::Table = toml::from_str("base_model = \"m\"\nlora_dropout = 1.5").unwrap();
    let err = stage.resolve_params(&raw).unwrap_err();
    assert_eq!(err.path, vec!["lora_dropout"]);
    let raw: toml::Table = toml::from_str("base_model = \"m\"\nlr_scheduler = \"exp\"").unwrap();
    assert_eq!(
        stage.resolve_params(&raw).unwrap_err().path,
        vec!["lr_scheduler"]
    );
    let raw: toml::Table = toml::from_str("lora_r = 8").unwrap();
    assert!(
        stage
            .resolve_params(&raw)
            .unwrap_err()
            .message
            .contains("base_model")
    );
}

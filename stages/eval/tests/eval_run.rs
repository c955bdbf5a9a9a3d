//! The `eval` stage end to end: a tiny adapter trained by the `train` stage, scored against its
//! base, with `metrics.json` and a self-contained `report.html`.

use std::collections::BTreeMap;
use std::path::Path;

use tigerflow_stage::{Context, Registry, Reporter};

struct Quiet;

impl Reporter for Quiet {
    fn begin(&self, _: &str, _: Option<u64>, _: &str) {}
    fn set_position(&self, _: u64) {}
    fn set_message(&self, _: &str) {}
    fn log(&self, _: &str) {}
}

fn run(
    kind: &str,
    params: &str,
    inputs: &[(&str, &Path)],
    out: &Path,
    root: &Path,
    cache: &Path,
) -> serde_json::Value {
    let mut registry = Registry::new();
    tigerflow_train::register(&mut registry);
    tigerflow_eval::register(&mut registry);
    let stage = registry.get(kind).unwrap();
    let params = stage
        .resolve_params(&toml::from_str(params).unwrap())
        .unwrap();
    std::fs::create_dir_all(out).unwrap();
    let mut ctx = Context {
        stage_name: kind,
        params: &params,
        inputs: inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_path_buf()))
            .collect::<BTreeMap<_, _>>(),
        out_dir: out,
        root,
        cache_dir: cache,
        reporter: &Quiet,
    };
    stage.run(&mut ctx).unwrap();
    for output in stage.outputs(&params) {
        assert!(
            out.join(&output).exists(),
            "{kind}: missing output {}",
            output.display()
        );
    }
    params
}

#[test]
fn eval_compares_base_and_tuned_and_writes_the_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates");
    let work = tempfile::tempdir().unwrap();
    let split = work.path().join("split");
    std::fs::create_dir(&split).unwrap();
    let line =
        |i: usize| format!("{{\"text\": \"### Ana: Olá {i}!\\n### SZ: Vemo-nos em Lisboa.\"}}\n");
    std::fs::write(
        split.join("train.jsonl"),
        (0..10).map(line).collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        split.join("test.jsonl"),
        (10..13).map(line).collect::<String>(),
    )
    .unwrap();
    let trained = work.path().join("train");
    run(
        "train",
        "base_model = \"llm/tests/fixtures/gqa_tied\"\nsequence_len = 64\nlora_r = 4\nmax_steps = 6\nwarmup_steps = 1\nlearning_rate = 3e-2\nlora_dropout = 0.0\ngradient_accumulation_steps = 1",
        &[("data", &split)],
        &trained,
        &root,
        work.path(),
    );
    let evaluated = work.path().join("eval");
    run(
        "eval",
        "sequence_len = 64\nmax_new_tokens = 4\nnum_prompts = 2",
        &[("data", &split), ("adapter", &trained)],
        &evaluated,
        &root,
        work.path(),
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(evaluated.join("metrics.json")).unwrap())
            .unwrap();
    let (base, tuned) = (
        metrics["base"]["loss"].as_f64().unwrap(),
        metrics["tuned"]["loss"].as_f64().unwrap(),
    );
    assert!(
        tuned < base,
        "training on the same phrasing lowers the test loss ({tuned} vs {base})"
    );
    assert_eq!(metrics["samples"].as_array().unwrap().len(), 2);
    let html = std::fs::read_to_string(evaluated.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("fine-tuned"));
}

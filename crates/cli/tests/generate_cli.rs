//! `tigerflow generate` on a tiny random model from the llm crate's fixtures: stdout holds only
//! the text, a PEFT adapter changes it, and an adapter for another model is refused.

#![cfg(feature = "ml-stages")]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{TestProject, describe};
use tigerflow_llm::peft::{AdapterConfig, AdapterTensors, PeftAdapter};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../llm/tests/fixtures/gqa_tied")
}

/// A LoRA on q_proj and v_proj of both layers with large, deterministic weights, so that the
/// adapted model's greedy choices differ from the base's. `hidden` is the input width.
fn write_adapter(dir: &Path, hidden: usize) {
    let targets = ["q_proj".to_owned(), "v_proj".to_owned()];
    let mut x = 0.3f32;
    let mut next = || {
        x = (x * 9.7 + 0.13).fract();
        2.0 * x - 1.0
    };
    let r = 2;
    let mut modules = BTreeMap::new();
    for layer in 0..2 {
        for (name, out) in [("q_proj", 64), ("v_proj", 32)] {
            modules.insert(
                format!("model.layers.{layer}.self_attn.{name}"),
                AdapterTensors {
                    a: (0..r * hidden).map(|_| next()).collect(),
                    b: (0..out * r).map(|_| next()).collect(),
                    r,
                    in_features: hidden,
                    out_features: out,
                },
            );
        }
    }
    let adapter = PeftAdapter {
        config: AdapterConfig::lora("tiny-gqa", r, 16.0, 0.0, &targets),
        modules,
    };
    adapter.save(dir).unwrap();
}

fn generate(p: &TestProject, extra: &[&str]) -> std::process::Output {
    let model = model_dir();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "hello there",
        "--max-new-tokens",
        "12",
    ];
    args.extend_from_slice(extra);
    p.tf(&args)
}

#[test]
fn an_adapter_changes_the_text_and_a_foreign_one_is_refused() {
    let p = TestProject::new("");
    let base = generate(&p, &[]);
    assert!(base.status.success(), "{}", describe(&base));
    assert!(!base.stdout.is_empty(), "{}", describe(&base));
    let stderr = String::from_utf8_lossy(&base.stderr);
    assert!(
        stderr.contains("tokens/s"),
        "progress goes to stderr: {stderr}"
    );
    assert_eq!(
        generate(&p, &[]).stdout,
        base.stdout,
        "greedy is deterministic"
    );

    let adapter = p.root().join("adapter");
    write_adapter(&adapter, 64);
    let tuned = generate(&p, &["--adapter", adapter.to_str().unwrap()]);
    assert!(tuned.status.success(), "{}", describe(&tuned));
    assert_ne!(
        tuned.stdout, base.stdout,
        "the adapter must change the output"
    );

    let foreign = p.root().join("foreign");
    write_adapter(&foreign, 48);
    let refused = generate(&p, &["--adapter", foreign.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.contains("adapter is 48→64") && line.contains("fix:") && line.contains("tiny-gqa"),
        "{err}"
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn an_empty_prompt_is_a_one_line_error() {
    let p = TestProject::new("");
    let model = model_dir();
    let out = p.tf(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.contains("prompt is empty") && line.contains("fix:"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

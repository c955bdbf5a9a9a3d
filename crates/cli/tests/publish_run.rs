//! `tigerflow run` with `dir:` publishing targets: both stages publish, and a second run
//! publishes nothing. Stand-in `cmd` stages produce the split and train layouts.

#![cfg(feature = "publish-stages")]

mod common;

use common::TestProject;

const PIPELINE: &str = r#"
[stages.split]
uses = "cmd"
inputs = { data = "data/rows.txt" }
cmd = "cp $TF_IN_DATA $TF_OUT/train.parquet && printf 'PAR1' > $TF_OUT/test.parquet && echo '{\"rows\": 2}' > $TF_OUT/report.json"
outs = ["train.parquet", "test.parquet", "report.json"]

[stages.train]
uses = "cmd"
inputs = { data = "data/rows.txt" }
cmd = "mkdir $TF_OUT/adapter && cp $TF_IN_DATA $TF_OUT/adapter/adapter_model.safetensors && echo '{\"peft_type\": \"LORA\", \"r\": 8}' > $TF_OUT/adapter/adapter_config.json"
outs = ["adapter"]

[stages.upload]
uses = "upload"
inputs = { dataset = "@split" }
target = "dir:published/dataset"

[stages.push]
uses = "push"
inputs = { adapter = "@train" }
target = "dir:published/adapter"
"#;

#[test]
fn dir_targets_publish_once() {
    let p = TestProject::new(PIPELINE);
    p.write("data/rows.txt", "two rows\n");
    let mut ran = p.ran(&[]);
    ran.sort();
    assert_eq!(ran, ["push", "split", "train", "upload"]);
    assert_eq!(
        p.read("published/dataset/data/train-00000-of-00001.parquet"),
        "two rows\n"
    );
    assert!(
        p.read("published/dataset/README.md")
            .contains("path: data/train-*")
    );
    assert_eq!(
        p.read("published/adapter/adapter_model.safetensors"),
        "two rows\n"
    );
    let receipt: serde_json::Value =
        serde_json::from_str(&p.output_file("upload", "published.json")).unwrap();
    assert_eq!(receipt["changed"], true);

    assert!(p.ran(&[]).is_empty(), "a second run publishes nothing");

    p.write("data/rows.txt", "three rows\n");
    let mut ran = p.ran(&[]);
    ran.sort();
    assert_eq!(ran, ["push", "split", "train", "upload"]);
    assert_eq!(
        p.read("published/dataset/data/train-00000-of-00001.parquet"),
        "three rows\n"
    );

    // Back to the first data: split and train come back from the run cache, but publishing
    // is done again, so the published folders hold the first data, not the second.
    p.write("data/rows.txt", "two rows\n");
    let mut ran = p.ran(&[]);
    ran.sort();
    assert_eq!(ran, ["push", "upload"]);
    assert_eq!(
        p.read("published/dataset/data/train-00000-of-00001.parquet"),
        "two rows\n"
    );
    assert_eq!(
        p.read("published/adapter/adapter_model.safetensors"),
        "two rows\n"
    );
}

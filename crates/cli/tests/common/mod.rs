//! Drives the real `tigerflow` binary on throw-away projects.

#![allow(dead_code)] // each test file uses a different part of this helper

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) struct TestProject {
    dir: tempfile::TempDir,
}

impl TestProject {
    /// A project whose pipeline.toml is `pipeline`.
    pub(crate) fn new(pipeline: &str) -> TestProject {
        let project = TestProject {
            dir: tempfile::tempdir().unwrap(),
        };
        project.write("pipeline.toml", pipeline);
        project
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn write(&self, relative: &str, content: &str) {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub(crate) fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(relative)).unwrap()
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tigerflow"));
        command
            .arg("-C")
            .arg(self.dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("TIGERFLOW_CACHE", self.dir.path().join(".cache"));
        command
    }

    pub(crate) fn tf(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and expects exit code 0; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.tf(args);
        assert!(
            out.status.success(),
            "tigerflow {args:?} failed:\n{}",
            describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `run --json` (plus `args`); returns the stages that ran, in order.
    pub(crate) fn ran(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--json", "run"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        stages_in(&out, "ran")
    }

    /// The committed output directory of a stage.
    pub(crate) fn output(&self, stage: &str) -> PathBuf {
        PathBuf::from(self.ok(&["path", stage]).trim())
    }

    pub(crate) fn output_file(&self, stage: &str, file: &str) -> String {
        std::fs::read_to_string(self.output(stage).join(file)).unwrap()
    }
}

/// Names of the stages with `state` in a `--json` report.
pub(crate) fn stages_in(json: &str, state: &str) -> Vec<String> {
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    value["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == state)
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A chain: `a` upper-cases data/in.txt, `b` counts its bytes, `c` copies b's count; `d` is
/// independent and reads data/other.txt.
pub(crate) const CHAIN: &str = r#"
[stages.a]
uses = "cmd"
inputs = { text = "data/in.txt" }
cmd = "tr a-z A-Z < \"$TF_IN_TEXT\" > \"$TF_OUT/upper.txt\""
outs = ["upper.txt"]

[stages.b]
uses = "cmd"
inputs = { upper = "@a/upper.txt" }
cmd = "wc -c < \"$TF_IN_UPPER\" | tr -d ' ' > \"$TF_OUT/count.txt\""
outs = ["count.txt"]

[stages.c]
uses = "cmd"
inputs = { count = "@b" }
cmd = "cp \"$TF_IN_COUNT/count.txt\" \"$TF_OUT/final.txt\""
outs = ["final.txt"]

[stages.d]
uses = "cmd"
inputs = { other = "data/other.txt" }
cmd = "cat \"$TF_IN_OTHER\" > \"$TF_OUT/copy.txt\""
outs = ["copy.txt"]
"#;

pub(crate) fn chain() -> TestProject {
    let project = TestProject::new(CHAIN);
    project.write("data/in.txt", "hello");
    project.write("data/other.txt", "other");
    project
}

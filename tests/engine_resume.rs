//! A resumable stage gets its staging directory back after a failed or killed attempt.

use std::path::PathBuf;

use tigerflow::progress::Progress;
use tigerflow::runner::{self, RunOptions, State};
use tigerflow::secrets::Redactor;
use tigerflow::selection::Selection;
use tigerflow_stage::{Context, InputSlot, ParamError, Registry, Stage, StageError};

/// Fails on its first attempt after leaving a checkpoint; finishes from the checkpoint after.
struct Checkpointed;

impl Stage for Checkpointed {
    fn kind(&self) -> &'static str {
        "checkpointed"
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn input_slots(&self) -> Option<&'static [InputSlot]> {
        Some(&[])
    }
    fn resolve_params(&self, _raw: &toml::Table) -> Result<serde_json::Value, ParamError> {
        Ok(serde_json::json!({}))
    }
    fn outputs(&self, _params: &serde_json::Value) -> Vec<PathBuf> {
        vec!["done.txt".into()]
    }
    fn resumable(&self) -> bool {
        true
    }
    fn run(&self, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let checkpoint = ctx.output("checkpoint");
        if checkpoint.exists() {
            std::fs::write(ctx.output("done.txt"), "resumed")
                .map_err(|e| StageError::io("done.txt", e))
        } else {
            std::fs::write(&checkpoint, "step 1").map_err(|e| StageError::io("checkpoint", e))?;
            Err(StageError::Failed("simulated crash".into()))
        }
    }
}

#[test]
fn a_resumable_stage_resumes_from_its_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        "[stages.train]\nuses = \"checkpointed\"\n",
    )
    .unwrap();
    let mut registry = Registry::new();
    registry.add(Checkpointed);
    let options = RunOptions {
        selection: Selection::default(),
        jobs: 1,
        dry_run: false,
        no_wait: true,
    };
    let progress = Progress::new(Redactor::default());
    let file = dir.path().join("pipeline.toml");

    let mut project = tigerflow::Project::open(&file, &registry).unwrap();
    let first = runner::run(&mut project, &registry, &options, &progress).unwrap();
    assert_eq!(first[0].state, State::Failed);
    assert_eq!(runner::resumable_staging(&project, &registry).len(), 1);

    let mut project = tigerflow::Project::open(&file, &registry).unwrap();
    let second = runner::run(&mut project, &registry, &options, &progress).unwrap();
    assert_eq!(second[0].state, State::Ran);
    let project = tigerflow::Project::open(&file, &registry).unwrap();
    let out = project.committed_output("train").unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("done.txt")).unwrap(),
        "resumed"
    );
    assert!(runner::resumable_staging(&project, &registry).is_empty());
    assert_eq!(project.stages_using("checkpointed"), ["train"]);
    assert_eq!(project.params("train"), Some(&serde_json::json!({})));
}

//! The `upload` stage kind: publishes the split dataset.

use std::path::PathBuf;

use tigerflow_stage::{Context, InputSlot, StageError, TypedStage};

use crate::dataset::dataset_entries;
use crate::hub::RepoKind;
use crate::params::PublishParams;
use crate::publish::{HubAccess, publish, repo_ref, target};
use crate::receipt::RECEIPT;

/// `uses = "upload"`.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub hub: HubAccess,
}

impl TypedStage for Upload {
    const KIND: &'static str = "upload";
    const CODE_VERSION: u32 = 1;
    const SIDE_EFFECTS: bool = true;
    const INPUTS: &'static [InputSlot] = &[
        InputSlot {
            name: "dataset",
            required: true,
            help: "the split stage's output: train/test parquet and jsonl, report.json",
        },
        InputSlot {
            name: "report",
            required: false,
            help: "the chunk stage's output (or its report.json), whose numbers go into the card",
        },
    ];
    type Params = PublishParams;

    fn outputs(&self, _params: &PublishParams) -> Vec<PathBuf> {
        vec![PathBuf::from(RECEIPT)]
    }

    fn run(&self, params: &PublishParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let target = target(params)?;
        let report = ctx.inputs.get("report").cloned();
        let entries =
            dataset_entries(ctx.input("dataset")?, report.as_deref(), &repo_ref(&target))?;
        publish(params, ctx, RepoKind::Dataset, &entries, &self.hub)
    }
}

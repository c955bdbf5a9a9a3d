//! The `push` stage kind: publishes the trained LoRA adapter.

use std::path::PathBuf;

use tigerflow_stage::{Context, InputSlot, StageError, TypedStage};

use crate::adapter::adapter_entries;
use crate::hub::RepoKind;
use crate::params::PublishParams;
use crate::publish::{HubAccess, publish, repo_ref, target};
use crate::receipt::RECEIPT;

/// `uses = "push"`.
#[derive(Debug, Clone, Default)]
pub struct Push {
    pub hub: HubAccess,
}

impl TypedStage for Push {
    const KIND: &'static str = "push";
    const CODE_VERSION: u32 = 1;
    const SIDE_EFFECTS: bool = true;
    const INPUTS: &'static [InputSlot] = &[
        InputSlot {
            name: "adapter",
            required: true,
            help: "the train stage's output (holding adapter/), or a PEFT adapter folder",
        },
        InputSlot {
            name: "metrics",
            required: false,
            help: "the eval stage's output (or its metrics.json), for the model card",
        },
    ];
    type Params = PublishParams;

    fn outputs(&self, _params: &PublishParams) -> Vec<PathBuf> {
        vec![PathBuf::from(RECEIPT)]
    }

    fn run(&self, params: &PublishParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let target = target(params)?;
        let metrics = ctx.inputs.get("metrics").cloned();
        let entries = adapter_entries(
            ctx.input("adapter")?,
            metrics.as_deref(),
            &repo_ref(&target),
        )?;
        publish(params, ctx, RepoKind::Model, &entries, &self.hub)
    }
}

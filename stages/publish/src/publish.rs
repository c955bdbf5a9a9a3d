//! What `upload` and `push` share: sending a file set to the chosen target and recording the
//! receipt.

use std::path::Path;

use tigerflow_stage::{Context, StageError};

use crate::dir_target::publish_dir;
use crate::hub::{FileFate, Hub, HubConfig, RepoKind};
use crate::manifest::{Entry, fingerprint};
use crate::params::PublishParams;
use crate::receipt::{FileRecord, Receipt};
use crate::target::Target;

/// How to reach the hub: from the environment at run time, or a fixed configuration.
#[derive(Debug, Clone, Default)]
pub enum HubAccess {
    #[default]
    FromEnv,
    Fixed(HubConfig),
}

impl HubAccess {
    fn config(&self) -> Result<HubConfig, StageError> {
        match self {
            HubAccess::FromEnv => {
                HubConfig::from_env().map_err(|e| StageError::Failed(e.to_string()))
            }
            HubAccess::Fixed(config) => Ok(config.clone()),
        }
    }
}

/// The name repositories and cards use for the target: `owner/name`, or the folder path.
pub(crate) fn repo_ref(target: &Target) -> String {
    match target {
        Target::Dir(path) => path.display().to_string(),
        Target::Hub(repo) => repo.to_string(),
    }
}

pub(crate) fn target(params: &PublishParams) -> Result<Target, StageError> {
    params.target().map_err(StageError::Failed)
}

/// Publishes `entries` and writes the receipt; fails, with no receipt, if anything did not
/// reach the target.
pub(crate) fn publish(
    params: &PublishParams,
    ctx: &Context<'_>,
    kind: RepoKind,
    entries: &[Entry],
    hub: &HubAccess,
) -> Result<(), StageError> {
    let fingerprint = fingerprint(entries);
    let summary = params.commit_message.clone().unwrap_or_else(|| {
        format!(
            "tigerflow: publish {} of pipeline `{}` via stage `{}` (content {})",
            kind.type_name(),
            pipeline_name(ctx.root),
            ctx.stage_name,
            &fingerprint[..12]
        )
    });
    let (location, changed, fates, commit, revision) = match target(params)? {
        Target::Dir(path) => {
            let dest = ctx.root.join(&path);
            ctx.reporter
                .begin(&format!("publish to {}", dest.display()), None, "files");
            let changed =
                publish_dir(&dest, entries).map_err(|e| StageError::Failed(e.to_string()))?;
            let fate = if changed { "written" } else { "unchanged" };
            (
                dest.display().to_string(),
                changed,
                vec![fate; entries.len()],
                None,
                None,
            )
        }
        Target::Hub(repo) => {
            let hub = Hub::new(hub.config()?, repo, kind, &params.revision, ctx.reporter)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            let description = entries
                .iter()
                .map(|e| format!("- {} ({} bytes, sha256 {})", e.path, e.size, e.sha256))
                .collect::<Vec<_>>()
                .join("\n");
            let published = hub
                .publish(entries, params.private, &summary, &description)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            let fates: Vec<&str> = published.fates.iter().map(|f| fate_name(*f)).collect();
            (
                hub.repo_url(),
                published.commit.is_some(),
                fates,
                published.commit,
                Some(params.revision.clone()),
            )
        }
    };
    ctx.reporter.log(&if changed {
        format!("published {} files to {location}", entries.len())
    } else {
        format!("{location} already holds this content; nothing published")
    });
    Receipt {
        target: params.target.clone(),
        location,
        revision,
        fingerprint,
        changed,
        files: entries
            .iter()
            .zip(fates)
            .map(|(e, fate)| FileRecord {
                path: e.path.clone(),
                size: e.size,
                sha256: e.sha256.clone(),
                fate,
            })
            .collect(),
        commit,
    }
    .write(ctx.out_dir)
}

fn fate_name(fate: FileFate) -> &'static str {
    match fate {
        FileFate::Committed => "committed",
        FileFate::Uploaded => "uploaded",
        FileFate::Reused => "reused",
        FileFate::Unchanged => "unchanged",
        FileFate::Ignored => "ignored",
    }
}

/// The project folder's name stands for the pipeline in commit messages.
fn pipeline_name(root: &Path) -> String {
    root.canonicalize()
        .ok()
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".to_owned())
}

//! The `train` stage's side of a data-parallel run: writes the job every rank reads, then starts
//! the ranks (processes of this binary, `tigerflow train-rank JOB`) on this host or through the
//! configured launcher and waits for them (`tigerflow_distributed::launch`).

use std::process::Command;

use tigerflow_distributed::launch::{launcher, local_ranks, supervise};
use tigerflow_llm::device::{DeviceError, DeviceSpec};
use tigerflow_llm::sources::ModelSource;
use tigerflow_stage::{Context, StageError};

use crate::params::TrainParams;
use crate::rank::{Job, library_path_for};

/// Trains in rank processes as `params` describe; returns when all of them finished.
pub fn launch(params: &TrainParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
    let stage = ctx.stage_name.to_owned();
    let failed = |message: String| StageError::Failed(format!("stage `{stage}`: {message}"));
    let specs = params
        .host_devices()
        .into_iter()
        .map(DeviceSpec::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(gpu) = specs.iter().find(|s| **s != DeviceSpec::Cpu)
        && !cfg!(feature = "cuda")
    {
        return Err(failed(DeviceError::NeedsCudaBuild(*gpu).to_string()));
    }
    // Download a remote base model once, here, rather than in every rank at the same time.
    ModelSource::parse(&params.base_model, ctx.root)
        .and_then(|source| source.resolve(ctx.cache_dir, &mut |line| ctx.reporter.log(line)))
        .map_err(|e| failed(e.to_string()))?;

    let dir = ctx.output("ranks");
    std::fs::create_dir_all(&dir).map_err(|e| StageError::io(dir.display().to_string(), e))?;
    let job_path = dir.join("job.json");
    let job = Job::of(ctx).map_err(|e| StageError::io("resolving the job's paths", e))?;
    std::fs::write(
        &job_path,
        serde_json::to_string_pretty(&job).expect("a job serializes"),
    )
    .map_err(|e| StageError::io(job_path.display().to_string(), e))?;
    let exe = std::env::current_exe().map_err(|e| StageError::io("finding tigerflow itself", e))?;
    let rank_command = || {
        let mut command = Command::new(&exe);
        command.arg("train-rank").arg(&job_path);
        command
    };

    let library_path =
        library_path_for(&specs, ctx.cache_dir).map_err(|e| failed(e.to_string()))?;
    let launches = if params.launcher.is_empty() {
        local_ranks(rank_command, specs.len(), &dir, library_path.as_deref())
            .map_err(|e| failed(e.to_string()))?
    } else {
        vec![
            launcher(
                &params.launcher,
                ctx.root,
                rank_command(),
                dir.join("launcher.log"),
                library_path.as_deref(),
            )
            .map_err(|e| failed(e.to_string()))?,
        ]
    };
    ctx.reporter.log(&format!(
        "training on {} ranks ({} per host: {}); logs in {}",
        params.world_size(),
        specs.len(),
        params.host_devices().join(", "),
        dir.display()
    ));
    supervise(launches, ctx.reporter).map_err(|e| failed(e.to_string()))
}

//! One rank of a data-parallel training job: `tigerflow train-rank <job.json>`.
//!
//! The train stage writes the job (its parameters, inputs and output folder) and starts the
//! ranks, itself or through a cluster launcher; each rank reads who it is from torchrun's (or
//! SLURM's) variables, meets the others, and trains its replica with the stage's own code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tigerflow_distributed::collective::Collective;
use tigerflow_distributed::collective::CollectiveError;
use tigerflow_distributed::nccl_lib::{self, NcclLibError};
use tigerflow_distributed::rank_env::RankEnv;
use tigerflow_distributed::rank_env::RankEnvError;
use tigerflow_distributed::rank_report::{LineReporter, RankLine};
use tigerflow_distributed::tcp_group::TcpGroup;
use tigerflow_llm::device::{DeviceError, DeviceSpec};
use tigerflow_stage::{Context, StageError};

use crate::params::TrainParams;
use crate::stage::train_as_rank;

/// How long ranks wait for each other to start: on a cluster, hosts start at different times.
pub const RENDEZVOUS: Duration = Duration::from_secs(600);

/// What every rank needs to run the stage: its [`Context`] without the reporter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub stage_name: String,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, PathBuf>,
    pub out_dir: PathBuf,
    pub root: PathBuf,
    pub cache_dir: PathBuf,
}

impl Job {
    /// The job of `ctx`, with absolute paths (ranks may start in another folder).
    pub fn of(ctx: &Context<'_>) -> std::io::Result<Job> {
        Ok(Job {
            stage_name: ctx.stage_name.to_owned(),
            params: ctx.params.clone(),
            inputs: ctx
                .inputs
                .iter()
                .map(|(name, path)| Ok((name.clone(), std::path::absolute(path)?)))
                .collect::<std::io::Result<_>>()?,
            out_dir: std::path::absolute(ctx.out_dir)?,
            root: std::path::absolute(ctx.root)?,
            cache_dir: std::path::absolute(ctx.cache_dir)?,
        })
    }
}

/// Why a rank could not train.
#[derive(Debug, thiserror::Error)]
pub enum RankError {
    #[error(transparent)]
    Env(#[from] RankEnvError),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error("{}: {source}", path.display())]
    ReadJob {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not a training job ({source}); fix: pass the job.json the train stage wrote",
        path.display()
    )]
    NotAJob {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: params: {source}", path.display())]
    Params {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "WORLD_SIZE={env} but the train stage has hosts × devices = {stage} ranks; fix: start {stage} ranks, or change hosts or devices"
    )]
    WorldSize { env: usize, stage: usize },
    #[error(
        "LOCAL_RANK={local_rank} but devices lists {devices} per host; fix: start one rank per listed device on each host"
    )]
    LocalRank { local_rank: usize, devices: usize },
    /// A device name that does not parse, or a GPU in a build without CUDA.
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Train(#[from] StageError),
}

/// Runs the rank described by the process environment on the job in `job_path`. A failure is
/// also sent to the stage as a [`RankLine::Failed`].
pub fn run_rank(job_path: &Path) -> Result<(), RankError> {
    tigerflow_distributed::launch::stop_with_parent();
    let env = RankEnv::from_env();
    let rank = env.as_ref().map_or(0, |env| env.rank);
    let result = env
        .map_err(RankError::from)
        .and_then(|env| run(job_path, &env));
    if let Err(error) = &result {
        RankLine::Failed {
            rank,
            message: error.to_string(),
        }
        .print();
    }
    result
}

fn run(job_path: &Path, env: &RankEnv) -> Result<(), RankError> {
    let path = || job_path.to_owned();
    let text = std::fs::read_to_string(job_path).map_err(|source| RankError::ReadJob {
        path: path(),
        source,
    })?;
    let job: Job = serde_json::from_str(&text).map_err(|source| RankError::NotAJob {
        path: path(),
        source,
    })?;
    let params: TrainParams =
        serde_json::from_value(job.params.clone()).map_err(|source| RankError::Params {
            path: path(),
            source,
        })?;
    if env.world_size != params.world_size() {
        return Err(RankError::WorldSize {
            env: env.world_size,
            stage: params.world_size(),
        });
    }
    let devices = params.host_devices();
    let name = devices.get(env.local_rank).ok_or(RankError::LocalRank {
        local_rank: env.local_rank,
        devices: devices.len(),
    })?;
    let spec = DeviceSpec::parse(name)?;
    let tcp = TcpGroup::join(env, RENDEZVOUS)?;
    let mut collective = collective_for(spec, tcp)?;
    let reporter = LineReporter::new(env.rank == 0);
    let mut ctx = Context {
        stage_name: &job.stage_name,
        params: &job.params,
        inputs: job.inputs.clone(),
        out_dir: &job.out_dir,
        root: &job.root,
        cache_dir: &job.cache_dir,
        reporter: &reporter,
    };
    Ok(train_as_rank(&params, &mut ctx, spec, collective.as_mut())?)
}

/// The `LD_LIBRARY_PATH` that ranks on `specs` start with: NCCL's folder first when any of them
/// is a GPU, `None` (leave it alone) when all are CPUs.
pub fn library_path_for(
    specs: &[DeviceSpec],
    cache_dir: &Path,
) -> Result<Option<std::ffi::OsString>, NcclLibError> {
    if specs.iter().all(|s| *s == DeviceSpec::Cpu) {
        return Ok(None);
    }
    nccl_lib::library_path(cache_dir).map(Some)
}

/// GPUs sum through NCCL; CPU ranks through the TCP group they met in.
pub fn collective_for(spec: DeviceSpec, tcp: TcpGroup) -> Result<Box<dyn Collective>, RankError> {
    match spec {
        DeviceSpec::Cpu => Ok(Box::new(tcp)),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(ordinal) => {
            let mut tcp = tcp;
            Ok(Box::new(tigerflow_distributed::nccl::NcclGroup::join(
                &mut tcp, ordinal,
            )?))
        }
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => Err(DeviceError::NeedsCudaBuild(spec).into()),
    }
}

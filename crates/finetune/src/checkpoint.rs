//! Resumable checkpoints: `checkpoints/step-NNNNNN/` holds the adapter (a loadable PEFT
//! directory), the AdamW moments and `trainer_state.json`; `checkpoints/latest` names the newest
//! complete one. All randomness (dropout, data order) is derived from the seed and the step, so
//! the step is the whole RNG and data position state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tigerflow_llm::peft::PeftAdapter;

use crate::adamw::Moments;

pub const DIR: &str = "checkpoints";
const LATEST: &str = "latest";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "trainer_state.json";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}; fix: delete the checkpoint directory to start the run afresh")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done; the next step to run.
    pub step: usize,
    /// The epoch and micro-batch index the next step starts at.
    pub epoch: usize,
    pub micro_batch: usize,
    /// Dropout and data order are drawn from streams seeded by (seed, step, micro-batch).
    pub seed: u64,
    /// Target tokens seen so far.
    pub tokens_seen: u64,
}

/// A checkpoint read back from disk.
pub struct Restored<B: Backend> {
    pub state: TrainerState,
    pub adapter: PeftAdapter,
    pub moments: BTreeMap<String, Moments<B, 2>>,
}

fn step_dir(out: &Path, step: usize) -> PathBuf {
    out.join(DIR).join(format!("step-{step:06}"))
}

/// Writes a checkpoint, then points `latest` at it, then removes older ones: a kill at any
/// moment leaves `latest` naming a complete checkpoint.
pub fn save<B: Backend>(
    out: &Path,
    state: &TrainerState,
    adapter: &PeftAdapter,
    moments: &BTreeMap<String, Moments<B, 2>>,
) -> Result<PathBuf, CheckpointError> {
    let dir = step_dir(out, state.step);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    adapter.save(&dir).map_err(|e| CheckpointError::Corrupt {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    save_moments(&dir.join(OPTIMIZER), moments)?;
    let state_path = dir.join(STATE);
    std::fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("state serializes"),
    )
    .map_err(io(&state_path))?;
    let name = dir
        .file_name()
        .expect("step dir has a name")
        .to_string_lossy()
        .into_owned();
    let latest = out.join(DIR).join(LATEST);
    let tmp = out.join(DIR).join("latest.tmp");
    std::fs::write(&tmp, &name).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &latest).map_err(io(&latest))?;
    let root = out.join(DIR);
    for entry in std::fs::read_dir(&root).map_err(io(&root))? {
        let path = entry.map_err(io(&root))?.path();
        let stale = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("step-") && *n != *name);
        if stale && path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(dir)
}

fn save_moments<B: Backend>(
    path: &Path,
    moments: &BTreeMap<String, Moments<B, 2>>,
) -> Result<(), CheckpointError> {
    let mut buffers = Vec::new();
    for (name, m) in moments {
        for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
            let shape = t.dims().to_vec();
            let values: Vec<f32> = t
                .clone()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("f32 data");
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            buffers.push((format!("{name}.{suffix}"), shape, bytes));
        }
    }
    let views: Vec<_> = buffers
        .iter()
        .map(|(k, shape, bytes)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).expect("consistent view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).map_err(|e| CheckpointError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The newest complete checkpoint under `out`, if any.
pub fn latest<B: Backend>(
    out: &Path,
    device: &B::Device,
) -> Result<Option<Restored<B>>, CheckpointError> {
    let latest = out.join(DIR).join(LATEST);
    let Ok(name) = std::fs::read_to_string(&latest) else {
        return Ok(None);
    };
    let dir = out.join(DIR).join(name.trim());
    let corrupt = |message: String| CheckpointError::Corrupt {
        path: dir.clone(),
        message,
    };
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let adapter = PeftAdapter::load(&dir).map_err(|e| corrupt(e.to_string()))?;
    let moments_path = dir.join(OPTIMIZER);
    let bytes = std::fs::read(&moments_path).map_err(io(&moments_path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut parts: BTreeMap<String, [Option<Tensor<B, 2>>; 2]> = BTreeMap::new();
    for (key, view) in st.tensors() {
        let (name, which) = if let Some(n) = key.strip_suffix(".exp_avg_sq") {
            (n, 1)
        } else if let Some(n) = key.strip_suffix(".exp_avg") {
            (n, 0)
        } else {
            return Err(corrupt(format!("unexpected optimizer tensor {key}")));
        };
        let shape = view.shape().to_vec();
        if view.dtype() != Dtype::F32 || shape.len() != 2 {
            return Err(corrupt(format!(
                "optimizer tensor {key} is not a 2-D f32 tensor"
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let tensor = Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), device);
        parts.entry(name.to_owned()).or_default()[which] = Some(tensor);
    }
    let mut moments = BTreeMap::new();
    for (name, [m, v]) in parts {
        let (Some(exp_avg), Some(exp_avg_sq)) = (m, v) else {
            return Err(corrupt(format!("optimizer state of {name} is incomplete")));
        };
        moments.insert(
            name,
            Moments {
                exp_avg,
                exp_avg_sq,
            },
        );
    }
    Ok(Some(Restored {
        state,
        adapter,
        moments,
    }))
}

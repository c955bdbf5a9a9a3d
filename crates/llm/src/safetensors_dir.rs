//! Weights in a Hugging Face model directory: `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. Each tensor is read from disk on request (seek + read), so
//! loading never holds a second copy of the checkpoint.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use half::{bf16, f16};
use serde::Deserialize;

use crate::weights::{WeightError, WeightSource};

#[derive(Debug, Clone, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Debug)]
struct Located {
    file: usize,
    entry: Entry,
}

/// The safetensors files of one checkpoint.
#[derive(Debug)]
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, u64)>,
    tensors: HashMap<String, Located>,
}

#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl SafetensorsDir {
    /// Opens `dir/model.safetensors` or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, WeightError> {
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| WeightError::Io {
                file: index_path.display().to_string(),
                source,
            })?;
            let index: Index = serde_json::from_str(&text).map_err(|e| WeightError::Format {
                file: index_path.display().to_string(),
                message: e.to_string(),
            })?;
            let mut shards: Vec<String> = index.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards
        } else {
            vec!["model.safetensors".to_owned()]
        };
        let mut this = Self {
            dir: dir.to_owned(),
            files: Vec::new(),
            tensors: HashMap::new(),
        };
        for name in names {
            this.add_file(dir.join(name))?;
        }
        Ok(this)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<(), WeightError> {
        let file_name = path.display().to_string();
        let io = |source| WeightError::Io {
            file: file_name.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let mut len = [0; 8];
        file.read_exact(&mut len).map_err(io)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > 100 << 20 {
            return Err(WeightError::Format {
                file: file_name,
                message: format!("header length {header_len} at byte 0 is implausible"),
            });
        }
        let mut header = vec![0; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let entries: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| WeightError::Format {
                file: file_name.clone(),
                message: format!("header: {e}"),
            })?;
        let index = self.files.len();
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let entry: Entry = serde_json::from_value(value).map_err(|e| WeightError::Format {
                file: file_name.clone(),
                message: format!("header entry {name}: {e}"),
            })?;
            self.tensors.insert(name, Located { file: index, entry });
        }
        self.files.push((path, 8 + header_len));
        Ok(())
    }
}

/// Converts raw little-endian values of a safetensors dtype to f32.
fn to_f32(dtype: &str, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

impl WeightSource for SafetensorsDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn read(&mut self, name: &str) -> Result<TensorData, WeightError> {
        let located = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            source_name: self.describe(),
            name: name.to_owned(),
        })?;
        let (path, data_start) = &self.files[located.file];
        let file_name = path.display().to_string();
        let io = |source| WeightError::Io {
            file: file_name.clone(),
            source,
        };
        let [start, end] = located.entry.data_offsets;
        let mut bytes = vec![0; end.saturating_sub(start) as usize];
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(data_start + start)).map_err(io)?;
        file.read_exact(&mut bytes).map_err(io)?;
        let values = to_f32(&located.entry.dtype, &bytes).ok_or_else(|| WeightError::Format {
            file: file_name.clone(),
            message: format!(
                "tensor {name} has dtype {}; fix: convert the checkpoint to F32, F16 or BF16",
                located.entry.dtype
            ),
        })?;
        let shape = located.entry.shape.clone();
        if values.len() != shape.iter().product::<usize>() {
            return Err(WeightError::Format {
                file: file_name,
                message: format!("tensor {name}: data length does not match shape {shape:?}"),
            });
        }
        Ok(TensorData::new(values, shape))
    }
}

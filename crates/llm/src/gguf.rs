//! A reader for GGUF files (llama.cpp's model format): metadata, tensor directory, and tensors
//! read one at a time and dequantized to f32.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::quant::{GgmlType, dequantize};
use crate::weights::WeightError;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(v) => Some(*v),
            Self::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Where a tensor lies in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// ggml order: `dims[0]` is the fastest-varying (the `in` of a `[out, in]` matrix).
    pub dims: Vec<usize>,
    pub type_id: u32,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The row-major shape (slowest first), as PyTorch would see it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An open GGUF file: its metadata and tensor directory.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    data_start: u64,
    reader: BufReader<File>,
}

/// Reads little-endian primitives while tracking the position for errors.
struct Cursor<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut buf = [0; N];
        self.inner.read_exact(&mut buf)?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self) -> std::io::Result<u32> {
        self.bytes().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::io::Result<u64> {
        self.bytes().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> std::io::Result<String> {
        let len = self.u64()?;
        if len > 1 << 24 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("string of {len} bytes"),
            ));
        }
        let mut buf = vec![0; len as usize];
        self.inner.read_exact(&mut buf)?;
        self.pos += len;
        String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    fn value(&mut self, kind: u32) -> std::io::Result<Value> {
        Ok(match kind {
            0 => Value::Int(self.bytes::<1>()?[0] as i64),
            1 => Value::Int(self.bytes::<1>()?[0] as i8 as i64),
            2 => Value::Int(u16::from_le_bytes(self.bytes()?) as i64),
            3 => Value::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => Value::Int(self.u32()? as i64),
            5 => Value::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => Value::Bool(self.bytes::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let item = self.u32()?;
                let n = self.u64()?;
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(item)?);
                }
                Value::Array(items)
            }
            10 => Value::Int(self.u64()? as i64),
            11 => Value::Int(i64::from_le_bytes(self.bytes()?)),
            12 => Value::Float(f64::from_le_bytes(self.bytes()?)),
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown metadata value type {other}"),
                ));
            }
        })
    }
}

impl GgufFile {
    /// Reads the header, metadata and tensor directory (not the tensors).
    pub fn open(path: &Path) -> Result<Self, WeightError> {
        let file_name = path.display().to_string();
        let io = |source| WeightError::Io {
            file: file_name.clone(),
            source,
        };
        let format = |message: String| WeightError::Format {
            file: file_name.clone(),
            message,
        };
        let file = File::open(path).map_err(io)?;
        let mut c = Cursor {
            inner: BufReader::new(file),
            pos: 0,
        };
        let at = |c: &Cursor<_>, e: std::io::Error| format(format!("byte {}: {e}", c.pos));
        let magic = c.bytes::<4>().map_err(io)?;
        if &magic != b"GGUF" {
            return Err(format("not a GGUF file (no GGUF magic at byte 0)".into()));
        }
        let version = c.u32().map_err(io)?;
        if !(2..=3).contains(&version) {
            return Err(format(format!(
                "GGUF version {version} is not supported (2 or 3 are)"
            )));
        }
        let tensor_count = c.u64().map_err(io)?;
        let kv_count = c.u64().map_err(io)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string().map_err(|e| at(&c, e))?;
            let kind = c.u32().map_err(io)?;
            let value = c.value(kind).map_err(|e| at(&c, e))?;
            metadata.insert(key, value);
        }
        let mut tensors = BTreeMap::new();
        for _ in 0..tensor_count {
            let name = c.string().map_err(|e| at(&c, e))?;
            let n_dims = c.u32().map_err(io)?;
            if n_dims > 4 {
                return Err(format(format!(
                    "byte {}: tensor {name} has {n_dims} dims",
                    c.pos
                )));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64().map(|d| d as usize))
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(io)?;
            let type_id = c.u32().map_err(io)?;
            let offset = c.u64().map_err(io)?;
            tensors.insert(
                name,
                TensorInfo {
                    dims,
                    type_id,
                    offset,
                },
            );
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32);
        let data_start = c.pos.div_ceil(alignment) * alignment;
        Ok(Self {
            path: path.to_owned(),
            metadata,
            tensors,
            data_start,
            reader: c.inner,
        })
    }

    /// Reads one tensor and dequantizes it to f32 (row-major, shape [`TensorInfo::shape`]).
    pub fn read_f32(&mut self, name: &str) -> Result<Vec<f32>, WeightError> {
        let file = self.path.display().to_string();
        let info = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            source_name: file.clone(),
            name: name.to_owned(),
        })?;
        let kind = GgmlType::from_id(info.type_id).ok_or_else(|| WeightError::Format {
            file: file.clone(),
            message: format!(
                "tensor {name} has ggml type {}, which tigerflow cannot dequantize (F32, F16, BF16, Q8_0, Q4_0, Q4_1 are supported); fix: convert the model with one of those types",
                info.type_id
            ),
        })?;
        let len = kind
            .byte_len(info.elements())
            .ok_or_else(|| WeightError::Format {
                file: file.clone(),
                message: format!(
                    "tensor {name}: {} elements do not fill whole blocks",
                    info.elements()
                ),
            })?;
        let mut bytes = vec![0; len];
        let io = |source| WeightError::Io {
            file: file.clone(),
            source,
        };
        self.reader
            .seek(SeekFrom::Start(self.data_start + info.offset))
            .map_err(io)?;
        self.reader.read_exact(&mut bytes).map_err(io)?;
        let mut out = Vec::with_capacity(info.elements());
        dequantize(kind, &bytes, &mut out);
        Ok(out)
    }
}

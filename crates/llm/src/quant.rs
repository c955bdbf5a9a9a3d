//! Dequantization of the ggml tensor types a GGUF file may hold, following ggml's reference
//! formulas exactly (same f32 operations in the same order, so results are bit-identical).

use half::{bf16, f16};

/// The ggml element types tigerflow can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    /// Maps ggml's type id; `None` for types tigerflow cannot dequantize.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }

    /// Bytes that `elements` values of this type occupy, or `None` if they do not fill whole
    /// blocks.
    pub fn byte_len(self, elements: usize) -> Option<usize> {
        let (per_block, bytes) = self.block();
        elements
            .is_multiple_of(per_block)
            .then_some(elements / per_block * bytes)
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Dequantizes `bytes` (a whole number of blocks of `kind`) to f32, appending to `out`.
pub fn dequantize(kind: GgmlType, bytes: &[u8], out: &mut Vec<f32>) {
    let (_, block_bytes) = kind.block();
    out.reserve(bytes.len() / block_bytes * kind.block().0);
    match kind {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::Bf16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = f16_at(block, 0);
                let qs = &block[2..18];
                out.extend(qs.iter().map(|q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for block in bytes.chunks_exact(block_bytes) {
                let (d, m) = (f16_at(block, 0), f16_at(block, 2));
                let qs = &block[4..20];
                out.extend(qs.iter().map(|q| d * (q & 0x0f) as f32 + m));
                out.extend(qs.iter().map(|q| d * (q >> 4) as f32 + m));
            }
        }
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(block_bytes) {
                let d = f16_at(block, 0);
                out.extend(block[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
    }
}

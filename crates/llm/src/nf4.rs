//! NF4 quantization of frozen base weights, bit for bit as bitsandbytes does it.
//!
//! A weight in Hugging Face `[out, in]` layout is flattened row-major and cut into blocks of
//! `blocksize` values (64 by default; a partial last block gets its own scale). Each block is
//! scaled by the reciprocal of its absolute maximum, and every value becomes the index of the
//! nearest entry of the 16-value NF4 code book. Two indices share a byte, the first in the high
//! nibble. With double quantization the per-block absmax values themselves are stored as 8-bit
//! codes of bitsandbytes' signed dynamic map, in blocks of 256, around their mean.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rayon::prelude::*;

/// The NF4 code book (`get_4bit_type("nf4")`); the index is the 4-bit code.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' block size for the absmax values under double quantization.
pub const NESTED_BLOCKSIZE: usize = 256;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Nf4Error {
    #[error(
        "NF4 block size {0} is not supported: use a power of two from 32 to 4096 (bitsandbytes' range)"
    )]
    BlockSize(usize),
    #[error("NF4 needs {expected} values for shape {shape:?}, got {got}")]
    Length {
        shape: [usize; 2],
        expected: usize,
        got: usize,
    },
    #[error("NF4 input holds a non-finite value at flat index {0}; the base weights are corrupt")]
    NonFinite(usize),
}

/// The per-block scales of an NF4 tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Absmax {
    /// One f32 absmax per block.
    Plain(Vec<f32>),
    /// Absmax values quantized again (bitsandbytes `compress_statistics=True`).
    Double(DoubleQuant),
}

/// 8-bit blockwise quantization of the absmax values, minus their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct DoubleQuant {
    /// One code of [`dynamic_map`] per absmax value.
    pub codes: Vec<u8>,
    /// One f32 scale per [`NESTED_BLOCKSIZE`] codes.
    pub nested_absmax: Vec<f32>,
    /// The mean of the original absmax values, added back after dequantization.
    pub offset: f32,
}

/// A `[out, in]` weight quantized to NF4.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Tensor {
    pub shape: [usize; 2],
    pub blocksize: usize,
    /// Two codes per byte, first element in the high nibble; an odd count pads a zero nibble.
    pub packed: Vec<u8>,
    pub absmax: Absmax,
}

impl Nf4Tensor {
    /// Quantizes `values` (row-major `shape`) like `bitsandbytes.functional.quantize_4bit`.
    pub fn quantize(
        values: &[f32],
        shape: [usize; 2],
        blocksize: usize,
        double_quant: bool,
    ) -> Result<Self, Nf4Error> {
        if !blocksize.is_power_of_two() || !(32..=4096).contains(&blocksize) {
            return Err(Nf4Error::BlockSize(blocksize));
        }
        let expected = shape[0] * shape[1];
        if values.len() != expected {
            return Err(Nf4Error::Length {
                shape,
                expected,
                got: values.len(),
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Nf4Error::NonFinite(i));
        }
        let (codes, absmax) = quantize_blockwise(values, blocksize, &NF4_CODE);
        let packed = codes
            .chunks(2)
            .map(|pair| (pair[0] << 4) | pair.get(1).copied().unwrap_or(0))
            .collect();
        let absmax = if double_quant {
            Absmax::Double(DoubleQuant::quantize(&absmax))
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Nf4Tensor {
            shape,
            blocksize,
            packed,
            absmax,
        })
    }

    pub fn len(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 scale of every block (decoded when double-quantized).
    pub fn block_absmax(&self) -> Vec<f32> {
        match &self.absmax {
            Absmax::Plain(a) => a.clone(),
            Absmax::Double(d) => d.dequantize(),
        }
    }

    /// The 4-bit code of every element, unpacked.
    pub fn codes(&self) -> Vec<u8> {
        self.packed
            .iter()
            .flat_map(|b| [b >> 4, b & 0x0f])
            .take(self.len())
            .collect()
    }

    /// `code[nibble] * absmax[block]` in f32, row-major `[out, in]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let absmax = self.block_absmax();
        self.codes()
            .iter()
            .enumerate()
            .map(|(i, &c)| NF4_CODE[c as usize] * absmax[i / self.blocksize])
            .collect()
    }

    /// Uploads the packed codes and block scales to `device`, ready for on-device dequantization.
    pub fn to_device<B: Backend>(&self, device: &B::Device) -> Nf4Weight<B> {
        Nf4Weight::new(self, device)
    }

    /// Bytes held by the quantized form (codes plus scales).
    pub fn storage_bytes(&self) -> usize {
        self.packed.len()
            + match &self.absmax {
                Absmax::Plain(a) => 4 * a.len(),
                Absmax::Double(d) => d.codes.len() + 4 * d.nested_absmax.len() + 4,
            }
    }
}

impl DoubleQuant {
    fn quantize(absmax: &[f32]) -> Self {
        // torch's `absmax.mean()` sums in f32 with pairwise-style reduction; a f64 sum rounded
        // once to f32 agrees with it on the sizes of real models (checked by the fixtures).
        let offset =
            (absmax.iter().map(|&a| f64::from(a)).sum::<f64>() / absmax.len() as f64) as f32;
        let centred: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
        let (codes, nested_absmax) = quantize_blockwise(&centred, NESTED_BLOCKSIZE, &dynamic_map());
        DoubleQuant {
            codes,
            nested_absmax,
            offset,
        }
    }

    fn dequantize(&self) -> Vec<f32> {
        let map = dynamic_map();
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| map[c as usize] * self.nested_absmax[i / NESTED_BLOCKSIZE] + self.offset)
            .collect()
    }
}

/// Blockwise absmax quantization against a sorted code book: `scaled = clamp(x * (1/absmax),
/// -1, 1)`, then the index of the nearest code (the first one on a tie, as `argmin` does).
/// Blocks are independent, so they are quantized in parallel: a 7B model has 100 million.
fn quantize_blockwise(values: &[f32], blocksize: usize, code: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut codes = vec![0u8; values.len()];
    let mut absmax = vec![0f32; values.len().div_ceil(blocksize)];
    codes
        .par_chunks_mut(blocksize)
        .zip(values.par_chunks(blocksize))
        .zip(absmax.par_iter_mut())
        .for_each(|((out, block), max_out)| {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            *max_out = max;
            let inv = 1.0 / max;
            for (c, &v) in out.iter_mut().zip(block) {
                // An all-zero block gives 0 * inf = NaN; it stores the code of 0.0 so that it
                // dequantizes to exact zeros.
                let scaled = (v * inv).clamp(-1.0, 1.0);
                *c = if scaled.is_nan() {
                    zero_code(code)
                } else {
                    nearest(code, scaled)
                };
            }
        });
    (codes, absmax)
}

fn zero_code(code: &[f32]) -> u8 {
    nearest(code, 0.0)
}

fn nearest(code: &[f32], x: f32) -> u8 {
    let mut best = 0;
    let mut best_distance = f32::INFINITY;
    for (i, &c) in code.iter().enumerate() {
        let d = (x - c).abs();
        if d < best_distance {
            best = i;
            best_distance = d;
        }
    }
    best as u8
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map(signed=True)`), computed with the
/// same f32 arithmetic as torch (`linspace`, midpoints, times a power of ten).
pub fn dynamic_map() -> [f32; 256] {
    const EXPONENT_BITS: i32 = 7;
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..EXPONENT_BITS {
        let boundaries = linspace_f32(0.1, 1.0, (1usize << i) + 1);
        let scale = 10f64.powi(i - (EXPONENT_BITS - 1)) as f32;
        for w in boundaries.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-scale * mean);
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut map = [0.0; 256];
    map.copy_from_slice(&data);
    map
}

/// `torch.linspace` on f32: the first half counts up from `start`, the second half down from
/// `end`, each value with one rounding (torch's CPU kernel compiles to fused multiply-adds).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// An NF4 weight on a device: codes stay packed eight to an integer, and the dense weight is
/// rebuilt whenever it is needed (with tensor ops, or on CUDA by tigerflow's kernel inside the
/// projection), so it never lives longer than one use.
#[derive(Module, Debug)]
pub struct Nf4Weight<B: Backend> {
    #[module(skip)]
    pub(crate) shape: [usize; 2],
    #[module(skip)]
    pub(crate) blocksize: usize,
    /// Eight 4-bit codes per word, element `8k + j` in bits `4j..4j+4` of word `k`.
    pub(crate) words: Tensor<B, 1, Int>,
    /// One f32 scale per block (double quantization is decoded on upload: it saves host memory
    /// and file size, while the device copy is small next to the codes).
    pub(crate) absmax: Tensor<B, 1>,
    pub(crate) code: Tensor<B, 1>,
}

impl<B: Backend> Nf4Weight<B> {
    fn new(nf4: &Nf4Tensor, device: &B::Device) -> Self {
        // Four packed bytes hold elements 8k..8k+8, each byte high nibble first; a word wants
        // element 8k + j in bits 4j..4j+4, which is the bytes with their nibbles swapped, read
        // little-endian.
        let words: Vec<i32> = nf4
            .packed
            .par_chunks(4)
            .map(|bytes| {
                let mut word = [0u8; 4];
                for (w, b) in word.iter_mut().zip(bytes) {
                    *w = b.rotate_left(4);
                }
                u32::from_le_bytes(word) as i32
            })
            .collect();
        let n_words = words.len();
        Nf4Weight {
            shape: nf4.shape,
            blocksize: nf4.blocksize,
            words: Tensor::from_data(TensorData::new(words, [n_words]), device),
            absmax: Tensor::from_data(
                TensorData::new(nf4.block_absmax(), [nf4.block_absmax().len()]),
                device,
            ),
            code: Tensor::from_data(TensorData::new(NF4_CODE.to_vec(), [16]), device),
        }
    }

    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }

    pub fn device(&self) -> B::Device {
        self.words.device()
    }

    /// The dense `[out, in]` weight, `code[nibble] * absmax[block]`.
    pub fn dequantize(&self) -> Tensor<B, 2> {
        let n = self.shape[0] * self.shape[1];
        let n_words = self.words.dims()[0];
        let words = self.words.clone().reshape([n_words, 1]).repeat_dim(1, 8);
        let shifts = Tensor::<B, 1, Int>::arange(0..8, &words.device())
            .mul_scalar(4)
            .reshape([1, 8])
            .repeat_dim(0, n_words);
        let nibbles = words
            .bitwise_right_shift(shifts)
            .bitwise_and_scalar(0x0f.elem())
            .reshape([n_words * 8])
            .narrow(0, 0, n);
        let values = self.code.clone().select(0, nibbles);
        let blocks = n.div_ceil(self.blocksize);
        let padded = blocks * self.blocksize;
        let values = if padded == n {
            values
        } else {
            Tensor::cat(
                vec![values, Tensor::zeros([padded - n], &self.code.device())],
                0,
            )
        };
        let scaled =
            values.reshape([blocks, self.blocksize]) * self.absmax.clone().reshape([blocks, 1]);
        scaled.reshape([padded]).narrow(0, 0, n).reshape(self.shape)
    }
}

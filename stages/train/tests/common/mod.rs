//! Helpers shared by the trainer tests: tiny models and fixture readers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::config::LlamaConfig;
use tigerflow_llm::linear::Projection;
use tigerflow_llm::lora::{ALL_LINEAR, LoraConfig};
use tigerflow_llm::model::Llama;
use tigerflow_llm::safetensors_dir::SafetensorsDir;
use tigerflow_llm::weights::{load_llama, nf4 as quantize_nf4};
use tigerflow_train::adamw::AdamWConfig;
use tigerflow_train::schedule::LrScheduler;
use tigerflow_train::trainer::Settings;

pub type B = Autodiff<CpuBackend>;

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_tiny")
}

/// The tiny random Llama of the PEFT fixture, dense or NF4.
pub fn tiny_model(nf4: bool) -> Llama<B> {
    let dir = fixture_dir();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let config = LlamaConfig::from_json(&text, "config.json").unwrap();
    let mut source = SafetensorsDir::open(&dir).unwrap();
    let device = Default::default();
    let mut make = |_: &str, data: TensorData| {
        if nf4 {
            quantize_nf4(data, 64, true, &device).unwrap()
        } else {
            Projection::new(Tensor::from_data(data, &device))
        }
    };
    load_llama::<B>(&config, &mut source, &device, &mut make).unwrap()
}

pub fn all_linear() -> Vec<String> {
    ALL_LINEAR.iter().map(|s| s.to_string()).collect()
}

pub fn settings(dropout: f64) -> Settings {
    Settings {
        targets: all_linear(),
        lora: LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout,
        },
        micro_batch_size: 2,
        accumulation: 2,
        num_epochs: 1,
        max_steps: Some(6),
        adamw: AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 0.0,
        },
        max_grad_norm: 1.0,
        learning_rate: 1e-2,
        lr_scheduler: LrScheduler::Cosine,
        warmup_steps: 2,
        eval_steps: 3,
        logging_steps: 1,
        save_steps: 2,
        seed: 42,
        recompute: true,
        pad_id: 0,
    }
}

/// Random token samples (BOS = 1 … EOS = 2) of the tiny model's vocabulary.
pub fn samples(count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let len = 3 + (next() % 10) as usize;
            let mut s = vec![1];
            s.extend((0..len).map(|_| 3 + (next() % 61) as u32));
            s.push(2);
            s
        })
        .collect()
}

pub fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

pub fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn to_vec(t: Tensor<CpuBackend, 2>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

pub fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

//! Training speed on a real model: seconds per optimizer step and tokens per second.
//!
//!     TIGERFLOW_BENCH_MODEL=path/to/model.gguf cargo bench -p tigerflow-train --bench train_step
//!
//! Optional: TIGERFLOW_BENCH_SEQ (256), TIGERFLOW_BENCH_ROWS (2), TIGERFLOW_BENCH_R (8),
//! TIGERFLOW_BENCH_RECOMPUTE (0), TIGERFLOW_BENCH_NF4 (1).

use std::path::Path;
use std::time::Instant;

use burn::backend::Autodiff;
use burn::tensor::{Tensor, TensorData};
use tigerflow_llm::adapters::attach_fresh;
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::gguf_weights::GgufWeights;
use tigerflow_llm::linear::Projection;
use tigerflow_llm::lora::{ALL_LINEAR, LoraConfig};
use tigerflow_llm::weights::{load_llama, nf4 as quantize_nf4};
use tigerflow_train::adamw::{AdamW, AdamWConfig};
use tigerflow_train::packing::{collate, pack};
use tigerflow_train::step::inference_model;
use tigerflow_train::trainer::{accumulate, apply_update, evaluate};

type B = Autodiff<CpuBackend>;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let Ok(path) = std::env::var("TIGERFLOW_BENCH_MODEL") else {
        eprintln!("error: set TIGERFLOW_BENCH_MODEL to a Llama .gguf file");
        std::process::exit(2);
    };
    let (seq, rows, r) = (
        env("TIGERFLOW_BENCH_SEQ", 256),
        env("TIGERFLOW_BENCH_ROWS", 2),
        env("TIGERFLOW_BENCH_R", 8),
    );
    let (recompute, nf4) = (
        env("TIGERFLOW_BENCH_RECOMPUTE", 0) == 1,
        env("TIGERFLOW_BENCH_NF4", 1) == 1,
    );
    let device = Default::default();
    let started = Instant::now();
    let mut source = GgufWeights::open(Path::new(&path)).unwrap();
    let config = source.config.clone();
    let mut make = |_: &str, data: TensorData| {
        if nf4 {
            quantize_nf4(data, 64, true, &device).unwrap()
        } else {
            Projection::new(Tensor::from_data(data, &device))
        }
    };
    let mut model = load_llama::<B>(&config, &mut source, &device, &mut make).unwrap();
    println!(
        "load (nf4 = {nf4}): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let targets: Vec<String> = ALL_LINEAR.iter().map(|s| s.to_string()).collect();
    let mut x = 0.37f32;
    let lora = LoraConfig {
        r,
        alpha: 16.0,
        dropout: 0.05,
    };
    attach_fresh(
        &mut model,
        &targets,
        &lora,
        || {
            x = (x * 7.1).fract();
            x
        },
        &device,
    );
    let vocab = config.vocab_size as u32;
    let samples: Vec<Vec<u32>> = (0..rows as u32)
        .map(|i| {
            (0..seq as u32)
                .map(|j| 1 + (i * 131 + j * 17) % (vocab - 1))
                .collect()
        })
        .collect();
    let packed = pack(&samples, seq, true).rows;
    let batch = collate(&packed, 0);
    let mut optimizer = AdamW::new(AdamWConfig {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
    });
    for step in 0..3 {
        let t = Instant::now();
        let acc = accumulate(
            &model,
            &targets,
            std::slice::from_ref(&batch),
            step,
            recompute,
            &device,
        );
        let tokens = acc.tokens;
        apply_update(&mut model, &targets, &mut optimizer, acc.grads, 1e-3, 1.0);
        let s = t.elapsed().as_secs_f64();
        println!(
            "step {step}: {s:.1} s, {tokens} tokens, {:.0} tokens/s (r = {r}, recompute = {recompute})",
            tokens as f64 / s
        );
    }
    let t = Instant::now();
    evaluate(&inference_model(&model), &packed, rows, 0).unwrap();
    println!(
        "eval forward: {:.1} s for {} tokens",
        t.elapsed().as_secs_f64(),
        batch.target_tokens
    );
}

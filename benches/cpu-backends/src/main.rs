//! Times tigerflow's Llama on burn-flex and on burn-ndarray, the two pure-Rust CPU backends of
//! burn 0.21, with the same model file:
//!
//!     cargo run --release -- MODEL.gguf
//!
//! Three workloads, each the best of three runs: a 256-token forward pass (the shape of
//! training and evaluation), the same forward pass with its backward pass (what a training
//! step costs without the optimizer), and 32 greedy tokens with the KV cache (generation).

use std::path::Path;
use std::time::{Duration, Instant};

use burn::backend::{Autodiff, Flex, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use tigerflow_llm::backend::Backend;
use tigerflow_llm::generate::generate_tokens;
use tigerflow_llm::model::{Keys, Llama};
use tigerflow_llm::open::ModelFiles;
use tigerflow_llm::sampling::{Sampler, SamplingConfig};
use tigerflow_llm::weights::{dense, load_llama};

const PREFILL: usize = 256;
const DECODE: usize = 32;
const RUNS: usize = 3;

fn best(mut run: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .min()
        .expect("RUNS > 0")
}

fn load<B: Backend>(path: &Path) -> Llama<B> {
    let device = Default::default();
    let mut files = ModelFiles::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    load_llama::<B>(
        &files.config,
        files.weights.as_mut(),
        &device,
        &mut dense(&device),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids<B: Backend>(vocab: usize, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let tokens: Vec<i64> = (0..PREFILL as i64)
        .map(|i| 1 + (i * 17) % (vocab as i64 - 1))
        .collect();
    let positions: Vec<i64> = (0..PREFILL as i64).collect();
    (
        Tensor::from_data(TensorData::new(tokens, [1, PREFILL]), device),
        Tensor::from_data(TensorData::new(positions, [1, PREFILL]), device),
    )
}

fn measure<B: Backend>(name: &str, path: &Path) {
    let model = load::<B>(path);
    let device = Default::default();
    let vocab = model.config.vocab_size;
    let forward = best(|| {
        let (input, positions) = ids::<B>(vocab, &device);
        let logits = model.forward(input, positions, None);
        logits.sum().into_scalar();
    });

    let trained = load::<Autodiff<B>>(path);
    let backward = best(|| {
        let (input, positions) = ids::<Autodiff<B>>(vocab, &device);
        let hidden = trained.embed(input.clone()).require_grad();
        let rotary = trained.rotary(positions);
        let mut x = hidden.clone();
        for layer in &trained.layers {
            x = layer.forward(x, &rotary, Keys::Own(None));
        }
        let loss = trained.logits(trained.norm.forward(x)).mean();
        let grads = loss.backward();
        hidden.grad(&grads).expect("the input needs a gradient");
    });

    let prompt: Vec<u32> = (0..16).map(|i| 1 + i * 31).collect();
    let decode = best(|| {
        let mut sampler = Sampler::new(SamplingConfig::default());
        let (tokens, _) =
            generate_tokens(&model, &prompt, DECODE, &mut sampler, &[], &mut |_| true);
        assert_eq!(tokens.len(), DECODE);
    });
    println!(
        "| {name} | {:.2} s | {:.2} s | {:.1} |",
        forward.as_secs_f64(),
        backward.as_secs_f64(),
        DECODE as f64 / decode.as_secs_f64()
    );
}

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: tigerflow-cpu-backends MODEL.gguf");
        std::process::exit(2);
    };
    let path = Path::new(&path);
    println!(
        "| backend | forward, {PREFILL} tokens | forward + backward (input grad), {PREFILL} tokens | greedy tokens/s ({DECODE} after a 16-token prompt) |"
    );
    println!("|---|---|---|---|");
    measure::<Flex>("burn-flex", path);
    measure::<NdArray>("burn-ndarray", path);
}

//! The loss arithmetic: packing must not change the loss, and how an optimizer step's rows are
//! split into micro-batches must not change its gradients (f32, dropout off).

mod common;

use common::*;
use tigerflow_llm::adapters::attach_fresh;
use tigerflow_train::packing::{Batch, collate, pack};
use tigerflow_train::step::{eval_nll_sum, inference_model};
use tigerflow_train::trainer::{Accumulated, accumulate};

fn model_with_adapters() -> tigerflow_llm::model::Llama<B> {
    let device = Default::default();
    let mut model = tiny_model(false);
    let mut x = 0.1f32;
    // Non-zero lora_B would need an optimizer step; a varied lora_A is enough to route gradients.
    attach_fresh(
        &mut model,
        &all_linear(),
        &settings(0.0).lora,
        || {
            x = (x * 7.3).fract();
            x
        },
        &device,
    );
    model
}

fn mean_loss(model: &tigerflow_llm::model::Llama<B>, batches: &[Batch]) -> f64 {
    let inner = inference_model(model);
    let device = Default::default();
    let nll: f64 = batches
        .iter()
        .map(|b| eval_nll_sum(&inner, b, &device))
        .sum();
    nll / batches.iter().map(|b| b.target_tokens).sum::<usize>() as f64
}

#[test]
fn packed_and_unpacked_rows_give_the_same_loss() {
    let model = model_with_adapters();
    let data = samples(6, 3);
    let packed = pack(&data, 48, true);
    let unpacked = pack(&data, 48, false);
    assert!(
        packed.rows.len() < unpacked.rows.len(),
        "the samples must actually share rows"
    );
    let a = mean_loss(&model, &[collate(&packed.rows, 0)]);
    let b = mean_loss(&model, &[collate(&unpacked.rows, 0)]);
    assert!((a - b).abs() / b < 1e-5, "packed {a} vs unpacked {b}");
    let device = Default::default();
    let targets = all_linear();
    let ga = accumulate(
        &model,
        &targets,
        &[collate(&packed.rows, 0)],
        0,
        false,
        &device,
    );
    let gb = accumulate(
        &model,
        &targets,
        &[collate(&unpacked.rows, 0)],
        0,
        false,
        &device,
    );
    assert_same(&ga, &gb, "packed vs unpacked");
}

fn assert_same(a: &Accumulated<B>, b: &Accumulated<B>, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    assert!(
        (a.loss() - b.loss()).abs() / b.loss() < 1e-5,
        "{what}: loss {} vs {}",
        a.loss(),
        b.loss()
    );
    for (i, ((a_a, a_b), (b_a, b_b))) in a.grads.iter().zip(&b.grads).enumerate() {
        for (x, y) in [(a_a, b_a), (a_b, b_b)] {
            let rel = max_rel(&to_vec(x.clone()), &to_vec(y.clone()));
            assert!(
                rel <= 1e-5,
                "{what}: adapter {i} grads differ (max rel {rel})"
            );
        }
    }
}

#[test]
fn one_by_four_accumulation_equals_four_by_one() {
    let model = model_with_adapters();
    let rows = pack(&samples(4, 9), 16, false).rows;
    assert_eq!(rows.len(), 4);
    let device = Default::default();
    let targets = all_linear();
    let singles: Vec<Batch> = rows
        .iter()
        .map(|r| collate(std::slice::from_ref(r), 0))
        .collect();
    let mb1_ga4 = accumulate(&model, &targets, &singles, 0, false, &device);
    let mb4_ga1 = accumulate(&model, &targets, &[collate(&rows, 0)], 0, false, &device);
    assert_same(&mb1_ga4, &mb4_ga1, "mb=1×ga=4 vs mb=4×ga=1");
}

#[test]
fn a_non_finite_loss_stops_the_run_with_a_clear_error() {
    use burn::module::Param;
    use burn::tensor::Tensor;
    use tigerflow_llm::peft::AdapterConfig;
    use tigerflow_train::plan::Plan;
    use tigerflow_train::trainer::{Observer, TrainError, train};

    struct Quiet;
    impl Observer for Quiet {
        fn started(&mut self, _: usize, _: usize) {}
        fn step_done(&mut self, _: &tigerflow_train::metrics::MetricsLine, _: usize) {}
        fn log(&mut self, _: &str) {}
    }

    let device = Default::default();
    let mut model = tiny_model(false);
    let dims = model.embed_tokens.val().dims();
    model.embed_tokens =
        Param::from_tensor(Tensor::full(dims, f32::NAN, &device)).set_require_grad(false);
    let s = settings(0.0);
    let plan = Plan::new(pack(&samples(4, 2), 32, true).rows, 2, 1, 1, Some(2), 1, 0);
    let config = AdapterConfig::lora("tiny", 4, 8.0, 0.0, &s.targets);
    let out = tempfile::tempdir().unwrap();
    let err = train(
        &mut model,
        &plan,
        &[],
        &s,
        &config,
        out.path(),
        &device,
        &mut Quiet,
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { step: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lower learning_rate"), "{err}");
}

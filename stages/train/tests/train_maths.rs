//! The loss arithmetic: packing must not change the loss, and how an optimizer step's rows are
//! split into micro-batches must not change its gradients (f32, dropout off).

mod common;

use common::*;
use tigerflow_train::packing::{Padding, pack};

#[test]
fn packed_and_unpacked_rows_give_the_same_loss() {
    check_packing::<B>(&Default::default(), 1e-5);
}

#[test]
fn one_by_four_accumulation_equals_four_by_one() {
    check_accumulation::<B>(&Default::default(), 1e-5);
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
    let plan = Plan::new(
        pack(&samples(4, 2), 32, true).rows,
        2,
        1,
        1,
        Some(2),
        1,
        Padding::longest(0),
    );
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

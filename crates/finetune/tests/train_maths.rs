//! The loss arithmetic: packing must not change the loss, and how an optimizer step's rows are
//! split into micro-batches must not change its gradients (f32, dropout off).

mod common;

use common::*;
use tigerflow_finetune::packing::pack;

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
    use tigerflow_finetune::trainer::TrainError;

    let device = Default::default();
    let mut model = tiny_model(false);
    let dims = model.embed_tokens.val().dims();
    model.embed_tokens =
        Param::from_tensor(Tensor::full(dims, f32::NAN, &device)).set_require_grad(false);
    let mut s = settings(0.0);
    (s.accumulation, s.max_steps, s.seed) = (1, Some(2), 1);
    let plan = plan_of(pack(&samples(4, 2), 32, true).rows, &s);
    let out = tempfile::tempdir().unwrap();
    let err = train_tiny(&mut model, &plan, &[], &s, out.path(), None).unwrap_err();
    assert!(
        matches!(err, TrainError::NonFinite { step: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lower learning_rate"), "{err}");
}

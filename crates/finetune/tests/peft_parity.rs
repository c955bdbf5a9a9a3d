//! The trainer against transformers + PEFT (fixture from `fixtures/make_peft_fixture.py`):
//! the same tiny model, adapter init, micro-batches and hyper-parameters must give the same
//! first-step LoRA gradients and the same losses for 10 optimizer steps.

mod common;

use common::*;

#[test]
fn matches_peft_gradients_and_losses() {
    check_peft_parity::<B>(
        &Default::default(),
        Tolerances {
            loss: 1e-5,
            grad: 1e-4,
            norm: 1e-4,
        },
    );
}

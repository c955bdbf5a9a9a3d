//! Gradient checkpointing (layer-wise recompute) gives the same gradients as keeping the whole
//! graph, dropout included: the masks are re-drawn identically from the per-layer seeds.
//! (One test per binary: the CPU backend's random generator is process-wide.)

mod common;

use common::*;
use tigerflow_llm::adapters::attach_fresh;
use tigerflow_train::packing::{Padding, collate, pack};
use tigerflow_train::trainer::accumulate;

#[test]
fn recompute_matches_the_full_graph_with_dropout() {
    let device = Default::default();
    let mut model = tiny_model(true);
    let mut x = 0.3f32;
    attach_fresh(
        &mut model,
        &all_linear(),
        &settings(0.2).lora,
        || {
            x = (x * 5.7).fract();
            x
        },
        &device,
    );
    let batch = collate(&pack(&samples(5, 1), 40, true).rows, Padding::longest(0));
    let targets = all_linear();
    let full = accumulate(
        &model,
        &targets,
        std::slice::from_ref(&batch),
        11,
        false,
        &device,
    );
    let recomputed = accumulate(
        &model,
        &targets,
        std::slice::from_ref(&batch),
        11,
        true,
        &device,
    );
    assert!((full.loss() - recomputed.loss()).abs() < 1e-6 * full.loss());
    for ((fa, fb), (ra, rb)) in full.grads.iter().zip(&recomputed.grads) {
        for (f, r) in [(fa, ra), (fb, rb)] {
            let rel = max_rel(&to_vec(r.clone()), &to_vec(f.clone()));
            assert!(rel <= 1e-5, "grads differ (max rel {rel})");
        }
    }
    // lora_B starts at zero, so dropout shows in the gradients of B, not yet in the loss.
    let again = accumulate(
        &model,
        &targets,
        std::slice::from_ref(&batch),
        12,
        true,
        &device,
    );
    let differs = again
        .grads
        .iter()
        .zip(&full.grads)
        .any(|((_, a), (_, b))| to_vec(a.clone()) != to_vec(b.clone()));
    assert!(differs, "another seed draws other dropout masks");
}

//! Gradient checkpointing (layer-wise recompute) gives the same gradients as keeping the whole
//! graph, dropout included: the masks are re-drawn identically from the per-layer seeds.
//! (One test per binary: the CPU backend's random generator is process-wide.)

mod common;

use common::*;

#[test]
fn recompute_matches_the_full_graph_with_dropout() {
    check_recompute::<B>(&Default::default(), 1e-6, 1e-5);
}

//! Data parallelism on the CPU: two ranks (threads meeting over TCP, as rank processes do)
//! that each compute half of every step's micro-batches train as one process computing all of
//! them, rank 0 alone writes, and an interrupted two-rank run resumes to the same result.
//!
//! Dropout is off here: threads share the CPU backend's one random generator, which each rank
//! re-seeds per layer. Rank processes do not share it; `tests/train_ranks.rs` at the workspace
//! root checks them with dropout on.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::*;
use tigerflow_distributed::rank_env::RankEnv;
use tigerflow_distributed::tcp_group::TcpGroup;
use tigerflow_finetune::metrics::{MetricsLine, read};
use tigerflow_finetune::packing::{Row, pack};
use tigerflow_finetune::trainer::{Outcome, Settings, adapter_tensors};

/// 18 packed rows: 9 micro-batches of 2 per epoch, so with 4 per step the third step of every
/// epoch has one micro-batch and rank 1 has none.
fn rows() -> Vec<Row> {
    let mut rows = pack(&samples(80, 11), 32, true).rows;
    assert!(rows.len() >= 18);
    rows.truncate(18);
    rows
}

fn global_settings() -> Settings {
    let mut s = settings(0.0);
    s.accumulation = 4;
    s.max_steps = Some(6);
    s
}

/// Trains alone or as `world` rank threads into `out`; returns rank 0's outcome and every
/// rank's final adapter weights.
fn run(world: usize, out: &Path, stop_after: Option<usize>) -> (Outcome, Vec<Vec<f32>>) {
    let s = global_settings();
    let test_rows = pack(&samples(3, 99), 32, true).rows;
    let train = |rank: usize, port: u16| {
        let mut model = tiny_model(false);
        let plan = plan_of(rows(), &s);
        let outcome = if world == 1 {
            train_tiny(&mut model, &plan, &test_rows, &s, out, stop_after)
        } else {
            let env = RankEnv {
                rank,
                world_size: world,
                local_rank: rank,
                master_addr: "127.0.0.1".into(),
                master_port: port,
            };
            let mut group = TcpGroup::join(&env, Duration::from_secs(30)).unwrap();
            train_tiny_as(
                &mut group, &mut model, &plan, &test_rows, &s, out, stop_after,
            )
        }
        .unwrap();
        let (_, adapters) = adapter_tensors(&mut model, &s.targets);
        let weights = adapters.into_iter().flat_map(to_vec).collect();
        (outcome, weights)
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let results: Vec<(Outcome, Vec<f32>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..world)
            .map(|rank| scope.spawn(move || train(rank, port)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let outcome = results[0].0.clone();
    (outcome, results.into_iter().map(|(_, w)| w).collect())
}

fn losses(out: &Path) -> Vec<(usize, Option<f64>, Option<f64>)> {
    read(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .map(|l: MetricsLine| (l.step, l.loss, l.eval_loss))
        .collect()
}

fn assert_close(a: &[(usize, Option<f64>, Option<f64>)], b: &[(usize, Option<f64>, Option<f64>)]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    let near = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-5 * y.abs(),
        (x, y) => x == y,
    };
    for (x, y) in a.iter().zip(b) {
        assert!(
            x.0 == y.0 && near(x.1, y.1) && near(x.2, y.2),
            "{x:?} vs {y:?}"
        );
    }
}

#[test]
fn two_ranks_train_as_one_process_on_the_whole_step() {
    let alone = tempfile::tempdir().unwrap();
    let (single, single_weights) = run(1, alone.path(), None);
    let shared = tempfile::tempdir().unwrap();
    let (ranked, weights) = run(2, shared.path(), None);

    assert_eq!(
        ranked,
        Outcome {
            final_eval_loss: ranked.final_eval_loss,
            ..single.clone()
        }
    );
    assert_close(&losses(shared.path()), &losses(alone.path()));
    assert_eq!(weights[0], weights[1], "replicas take identical steps");
    let rel = max_rel(&weights[0], &single_weights[0]);
    assert!(rel < 1e-4, "adapters differ from one process's by {rel}");
    let files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        files(shared.path()),
        files(alone.path()),
        "only rank 0 writes"
    );
}

#[test]
fn an_interrupted_two_rank_run_resumes_to_the_same_end() {
    let straight = tempfile::tempdir().unwrap();
    let (_, whole) = run(2, straight.path(), None);
    let cut = tempfile::tempdir().unwrap();
    let (stopped, _) = run(2, cut.path(), Some(5));
    assert_eq!(stopped.steps, 5);
    let (resumed, weights) = run(2, cut.path(), None);
    assert_eq!(
        (resumed.resumed_at, resumed.steps),
        (4, 6),
        "from the step-4 checkpoint"
    );
    assert_eq!(weights[0], weights[1]);
    assert!(max_rel(&weights[0], &whole[0]) < 1e-6);
    assert_close(&losses(cut.path()), &losses(straight.path()));
}

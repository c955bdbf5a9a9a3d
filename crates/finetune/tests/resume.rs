//! A run cut short after an unsaved step (as by kill -9) resumes from its last checkpoint and
//! ends with exactly the adapter and metrics of an uninterrupted run (NF4 base, dropout on).

mod common;

use common::*;
use tigerflow_finetune::metrics::{MetricsLine, read};
use tigerflow_finetune::packing::pack;
use tigerflow_llm::peft::PeftAdapter;

fn run(out: &std::path::Path, stop_after: Option<usize>) -> tigerflow_finetune::trainer::Outcome {
    let s = settings(0.05);
    let plan = plan_of(pack(&samples(14, 5), 32, true).rows, &s);
    let test_rows = pack(&samples(3, 99), 32, true).rows;
    train_tiny(
        &mut tiny_model(true),
        &plan,
        &test_rows,
        &s,
        out,
        stop_after,
    )
    .unwrap()
}

fn without_timing(lines: Vec<MetricsLine>) -> Vec<MetricsLine> {
    lines
        .into_iter()
        .map(|mut l| {
            l.tokens_per_s = None;
            l
        })
        .collect()
}

#[test]
fn resumed_run_ends_with_the_uninterrupted_adapter() {
    let straight = tempfile::tempdir().unwrap();
    let done = run(straight.path(), None);
    assert_eq!((done.steps, done.resumed_at), (6, 0));

    let killed = tempfile::tempdir().unwrap();
    // Steps 1–3 run, the checkpoint of step 2 is the last one saved, then the process "dies".
    let first = run(killed.path(), Some(3));
    assert_eq!(first.steps, 3);
    let second = run(killed.path(), None);
    assert_eq!((second.resumed_at, second.steps), (2, 6));

    let a = PeftAdapter::load(&straight.path().join("checkpoints/step-000006")).unwrap();
    let b = PeftAdapter::load(&killed.path().join("checkpoints/step-000006")).unwrap();
    assert_eq!(
        a.modules, b.modules,
        "resumed adapter differs from the uninterrupted one"
    );
    let ma = without_timing(read(&straight.path().join("metrics.jsonl")).unwrap());
    let mb = without_timing(read(&killed.path().join("metrics.jsonl")).unwrap());
    assert_eq!(ma, mb, "metrics of the resumed run differ");
    let losses: Vec<f64> = ma.iter().filter_map(|l| l.loss).collect();
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(ma.iter().any(|l| l.eval_loss.is_some()), "evaluation ran");
}

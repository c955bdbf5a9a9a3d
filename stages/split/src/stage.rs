//! The `split` stage: `dataset.parquet` → train and test files with a report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tigerflow_chunk::dataset::{self, Sample};
use tigerflow_chunk::report::{self, LengthStats};
use tigerflow_stage::{Context, InputSlot, StageError, TypedStage};

use crate::assign::{self, Key};
use crate::params::SplitParams;

pub struct SplitStage;

const OUTPUTS: [&str; 6] = [
    "train.jsonl",
    "test.jsonl",
    "train.parquet",
    "test.parquet",
    "report.json",
    "lengths.svg",
];

#[derive(Serialize)]
struct Side {
    samples: usize,
    sessions: usize,
    lengths: LengthStats,
}

#[derive(Serialize)]
struct SplitReport<'a> {
    params: &'a SplitParams,
    train: Side,
    test: Side,
    /// Conversations with windows on both sides (0 with `strategy = "session"`).
    sessions_on_both_sides: usize,
}

/// The `dataset` input is the `chunk` stage's directory or a dataset.parquet file.
fn dataset_file(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join("dataset.parquet")
    } else {
        input.to_path_buf()
    }
}

impl TypedStage for SplitStage {
    const KIND: &'static str = "split";
    const CODE_VERSION: u32 = 1;
    const INPUTS: &'static [InputSlot] = &[InputSlot {
        name: "dataset",
        required: true,
        help: "the `chunk` stage's output (or a dataset.parquet)",
    }];
    type Params = SplitParams;

    fn outputs(&self, _params: &SplitParams) -> Vec<PathBuf> {
        OUTPUTS.map(PathBuf::from).to_vec()
    }

    fn run(&self, params: &SplitParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let input = dataset_file(ctx.input("dataset")?);
        ctx.reporter.begin("split", None, "");
        let samples = dataset::read_parquet(&input).map_err(|e| {
            StageError::input(&input, format!("cannot read the dataset table: {e}"))
        })?;
        if samples.len() < 2 {
            return Err(StageError::input(
                &input,
                format!(
                    "{} samples cannot be split into train and test; fix: use a longer export or lower the chunk stage's `min_messages`",
                    samples.len()
                ),
            ));
        }
        let keys: Vec<Key> = samples
            .iter()
            .map(|s| Key {
                session: s.session,
                first_unix_time: s.first_unix_time,
            })
            .collect();
        let split = assign::assign(&keys, params);
        let train: Vec<Sample> = split.train.iter().map(|&i| samples[i].clone()).collect();
        let test: Vec<Sample> = split.test.iter().map(|&i| samples[i].clone()).collect();
        for (name, side) in [("train", &train), ("test", &test)] {
            let jsonl = ctx.output(format!("{name}.jsonl"));
            dataset::write_jsonl(&jsonl, side)
                .map_err(|e| StageError::io(format!("writing {}", jsonl.display()), e))?;
            let parquet = ctx.output(format!("{name}.parquet"));
            dataset::write_parquet(&parquet, side)
                .map_err(|e| StageError::Failed(format!("writing {}: {e}", parquet.display())))?;
        }

        let max = samples.iter().map(|s| s.length).max().unwrap_or(0);
        let side = |side: &[Sample]| {
            let lengths: Vec<u32> = side.iter().map(|s| s.length).collect();
            Side {
                samples: side.len(),
                sessions: side.iter().map(|s| s.session).collect::<HashSet<_>>().len(),
                lengths: LengthStats::new("length", &lengths, max),
            }
        };
        let train_sessions: HashSet<u32> = train.iter().map(|s| s.session).collect();
        let both = test
            .iter()
            .map(|s| s.session)
            .filter(|s| train_sessions.contains(s))
            .collect::<HashSet<_>>()
            .len();
        let report = SplitReport {
            params,
            train: side(&train[..]),
            test: side(&test[..]),
            sessions_on_both_sides: both,
        };
        report::plot(
            &ctx.output("lengths.svg"),
            "Sample lengths: train and test",
            "budget unit",
            &[
                ("train", &report.train.lengths.histogram),
                ("test", &report.test.lengths.histogram),
            ],
        )
        .map_err(|e| StageError::Failed(format!("drawing lengths.svg: {e}")))?;
        ctx.reporter.log(&format!(
            "{:?} split (seed {}): train {} samples from {} conversations, test {} from {}; {} conversations on both sides",
            params.strategy,
            params.seed,
            report.train.samples,
            report.train.sessions,
            report.test.samples,
            report.test.sessions,
            both
        ));
        tigerflow_chunk::write_json(&ctx.output("report.json"), &report)
    }
}

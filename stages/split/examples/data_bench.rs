//! Runs parse → chunk → split with default parameters through the `Stage` trait, as the
//! engine would, and prints each stage's wall time. Used by the data-stages benchmark:
//!
//!     cargo run -p tigerflow-split --example data_bench -- path/to/result.json out_dir/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tigerflow_chunk::ChunkStage;
use tigerflow_split::SplitStage;
use tigerflow_stage::{Context, Reporter, Stage};
use tigerflow_telegram::TelegramStage;

struct Stderr;

impl Reporter for Stderr {
    fn begin(&self, _step: &str, _total: Option<u64>, _unit: &str) {}
    fn set_position(&self, _position: u64) {}
    fn set_message(&self, _message: &str) {}
    fn log(&self, line: &str) {
        eprintln!("  {line}");
    }
}

fn run(stage: &dyn Stage, input: (&str, PathBuf), out: &Path) {
    let params = stage
        .resolve_params(&toml::Table::new())
        .expect("defaults are valid");
    std::fs::create_dir_all(out).expect("creating the output directory");
    let inputs = BTreeMap::from([(input.0.to_owned(), input.1)]);
    let root = PathBuf::from(".");
    let mut ctx = Context {
        stage_name: stage.kind(),
        params: &params,
        inputs,
        out_dir: out,
        root: &root,
        cache_dir: out,
        reporter: &Stderr,
    };
    let start = Instant::now();
    if let Err(e) = stage.run(&mut ctx) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    eprintln!("{}: {:.2} s", stage.kind(), start.elapsed().as_secs_f64());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, export, out] = args.as_slice() else {
        eprintln!("usage: data_bench <result.json> <out_dir>");
        std::process::exit(2);
    };
    let out = Path::new(out);
    let start = Instant::now();
    run(
        &TelegramStage,
        ("export", PathBuf::from(export)),
        &out.join("parse"),
    );
    run(
        &ChunkStage,
        ("messages", out.join("parse")),
        &out.join("chunk"),
    );
    run(
        &SplitStage,
        ("dataset", out.join("chunk")),
        &out.join("split"),
    );
    eprintln!("total: {:.2} s", start.elapsed().as_secs_f64());
}

//! The `chunk` stage: messages → conversations → windows → `dataset.jsonl` + report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tigerflow_stage::{Context, InputSlot, StageError, TypedStage};

use crate::dataset::{self, Sample};
use crate::params::ChunkParams;
use crate::render::Renderer;
use crate::report::{self, LengthStats};
use crate::turns::{self, Turn, TurnCounts};
use crate::window::{self, Chars, Measure, Tokens};

pub struct ChunkStage;

pub(crate) const DATASET_JSONL: &str = "dataset.jsonl";
pub(crate) const DATASET_PARQUET: &str = "dataset.parquet";
pub(crate) const REPORT: &str = "report.json";
pub(crate) const PLOT: &str = "lengths.svg";

/// Per-speaker totals over the messages in kept samples.
#[derive(Debug, Default, Serialize)]
struct AuthorTotals {
    messages: u64,
    chars: u64,
}

#[derive(Debug, Serialize)]
struct WindowCounts {
    made: usize,
    dropped_below_min_messages: usize,
    messages_in_dropped: u64,
    kept: usize,
    /// Messages longer than the budget, cut into pieces.
    cut_messages: usize,
}

#[derive(Debug, Serialize)]
struct ChunkReport<'a> {
    messages: &'a TurnCounts,
    windows: WindowCounts,
    budget: u32,
    authors: BTreeMap<String, AuthorTotals>,
    lengths: LengthStats,
}

/// The `messages` input is the `telegram` stage's directory or a parquet file.
fn messages_file(input: &Path) -> PathBuf {
    if input.is_dir() {
        input.join("messages.parquet")
    } else {
        input.to_path_buf()
    }
}

impl TypedStage for ChunkStage {
    const KIND: &'static str = "chunk";
    const CODE_VERSION: u32 = 1;
    const INPUTS: &'static [InputSlot] = &[InputSlot {
        name: "messages",
        required: true,
        help: "the `telegram` stage's output (or a messages.parquet)",
    }];
    type Params = ChunkParams;

    fn outputs(&self, _params: &ChunkParams) -> Vec<PathBuf> {
        [DATASET_JSONL, DATASET_PARQUET, REPORT, PLOT]
            .map(PathBuf::from)
            .to_vec()
    }

    fn extra_dependencies(&self, params: &ChunkParams) -> Vec<PathBuf> {
        params.tokenizer.iter().map(PathBuf::from).collect()
    }

    fn run(&self, params: &ChunkParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let input = messages_file(ctx.input("messages")?);
        let measure: Box<dyn Measure> = match &params.tokenizer {
            Some(path) => {
                let path = ctx.project_path(path);
                let tokenizer = tokenizers::Tokenizer::from_file(&path).map_err(|e| {
                    StageError::input(&path, format!("not a usable tokenizer.json ({e}); fix: point `tokenizer` at a Hugging Face tokenizer.json"))
                })?;
                Box::new(Tokens(tokenizer))
            }
            None => Box::new(Chars),
        };
        let (unit, budget) = match params.max_tokens {
            Some(tokens) => ("tokens", tokens),
            None => ("chars", params.max_chars),
        };
        let histogram_unit = if params.tokenizer.is_some() {
            "tokens"
        } else {
            "chars"
        };

        ctx.reporter.begin("conversations", None, "");
        let (turns, counts) = turns::load_turns(
            &input,
            params.session_gap_seconds(),
            params.merge_consecutive,
        )
        .map_err(|e| StageError::input(&input, format!("cannot read the messages table: {e}")))?;

        ctx.reporter
            .begin("windows", Some(turns.len() as u64), "turns");
        let mut renderer = Renderer::new(params);
        let rendered: Vec<(String, String)> = turns.iter().map(|t| renderer.render(t)).collect();
        let mut samples = Vec::new();
        let mut authors: BTreeMap<String, AuthorTotals> = BTreeMap::new();
        let mut windows = WindowCounts {
            made: 0,
            dropped_below_min_messages: 0,
            messages_in_dropped: 0,
            kept: 0,
            cut_messages: 0,
        };
        let budget_measure: &dyn Measure = if params.max_tokens.is_some() {
            measure.as_ref()
        } else {
            &Chars
        };
        let mut start = 0;
        while start < turns.len() {
            let session = turns[start].session;
            let end = start
                + turns[start..]
                    .iter()
                    .take_while(|t| t.session == session)
                    .count();
            let texts: Vec<String> = rendered[start..end]
                .iter()
                .map(|(text, _)| text.clone())
                .collect();
            let made = window::windows(&texts, &params.separator, budget, budget_measure);
            windows.made += made.len();
            windows.cut_messages += count_cut(&made);
            for w in made {
                let window_turns = &turns[start + w.turns.start()..=start + w.turns.end()];
                let messages: u32 = window_turns.iter().map(|t| t.messages).sum();
                if (messages as usize) < params.min_messages {
                    windows.dropped_below_min_messages += 1;
                    windows.messages_in_dropped += u64::from(messages);
                    continue;
                }
                for (offset, turn) in window_turns.iter().enumerate() {
                    let speaker = &rendered[start + w.turns.start() + offset].1;
                    let totals = authors.entry(speaker.clone()).or_default();
                    totals.messages += u64::from(turn.messages);
                    totals.chars += turn.text.chars().count() as u64;
                }
                let length = if histogram_unit == unit {
                    w.cost
                } else {
                    measure.cost(&w.text)
                };
                samples.push(sample(w.text, window_turns, messages, length));
            }
            ctx.reporter.set_position(end as u64);
            start = end;
        }
        windows.kept = samples.len();
        if samples.is_empty() {
            return Err(StageError::Failed(format!(
                "no conversation has at least {} messages ({} messages kept of {}); fix: lower `min_messages` or raise `session_gap`",
                params.min_messages, counts.messages_kept, counts.messages_in
            )));
        }

        ctx.reporter.begin("write", None, "");
        write_dataset(ctx, &samples)?;
        let lengths: Vec<u32> = samples.iter().map(|s| s.length).collect();
        let stats = LengthStats::new(histogram_unit, &lengths, budget as u32);
        report::plot(
            &ctx.output(PLOT),
            "Sample lengths",
            histogram_unit,
            &[("samples", &stats.histogram)],
        )
        .map_err(|e| StageError::Failed(format!("drawing {PLOT}: {e}")))?;
        ctx.reporter.log(&format!(
            "{} messages in: {} service and {} empty dropped, {} kept in {} conversations",
            counts.messages_in,
            counts.dropped_service,
            counts.dropped_empty,
            counts.messages_kept,
            counts.sessions
        ));
        ctx.reporter.log(&format!(
            "{} windows of at most {budget} {unit}: {} kept, {} dropped below {} messages, {} long messages cut",
            windows.made, windows.kept, windows.dropped_below_min_messages, params.min_messages, windows.cut_messages
        ));
        ctx.reporter.log(&stats.summary());
        let report = ChunkReport {
            messages: &counts,
            windows,
            budget: budget as u32,
            authors,
            lengths: stats,
        };
        write_json(&ctx.output(REPORT), &report)
    }
}

/// Windows that share their first turn with the previous window's last turn hold pieces of a
/// cut message.
fn count_cut(windows: &[window::Window]) -> usize {
    windows
        .windows(2)
        .filter(|pair| pair[0].turns.end() == pair[1].turns.start())
        .count()
}

fn sample(text: String, turns: &[Turn], messages: u32, length: usize) -> Sample {
    Sample {
        text,
        session: turns[0].session,
        messages,
        length: length as u32,
        first_unix_time: turns[0].unix_time,
        last_unix_time: turns[turns.len() - 1].unix_time,
    }
}

fn write_dataset(ctx: &Context<'_>, samples: &[Sample]) -> Result<(), StageError> {
    let jsonl = ctx.output(DATASET_JSONL);
    dataset::write_jsonl(&jsonl, samples)
        .map_err(|e| StageError::io(format!("writing {}", jsonl.display()), e))?;
    let parquet = ctx.output(DATASET_PARQUET);
    dataset::write_parquet(&parquet, samples)
        .map_err(|e| StageError::Failed(format!("writing {}: {e}", parquet.display())))
}

/// Writes a report as pretty JSON.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StageError> {
    let text = serde_json::to_string_pretty(value).expect("reports serialize");
    std::fs::write(path, text).map_err(|e| StageError::io(format!("writing {}", path.display()), e))
}

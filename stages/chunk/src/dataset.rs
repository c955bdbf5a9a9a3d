//! The dataset files: `{"text": ...}` JSON lines (what axolotl's `type: completion` reads)
//! and a parquet table with the same rows plus their metadata. `split` reads and writes
//! the same layout.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use polars::prelude::*;

/// One training sample: a window of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub text: String,
    /// The conversation it comes from (windows of one conversation share it).
    pub session: u32,
    pub messages: u32,
    /// Length in the budget's unit (characters, or tokens with a tokenizer).
    pub length: u32,
    pub first_unix_time: i64,
    pub last_unix_time: i64,
}

const TEXT: &str = "text";
const SESSION: &str = "session";
const MESSAGES: &str = "messages";
const LENGTH: &str = "length";
const FIRST: &str = "first_unix_time";
const LAST: &str = "last_unix_time";

pub fn write_jsonl(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    for sample in samples {
        serde_json::to_writer(&mut out, &serde_json::json!({ "text": sample.text }))?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub fn write_parquet(path: &Path, samples: &[Sample]) -> PolarsResult<()> {
    let mut frame = DataFrame::new_infer_height(vec![
        Column::new(
            TEXT.into(),
            samples.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            SESSION.into(),
            samples.iter().map(|s| s.session).collect::<Vec<_>>(),
        ),
        Column::new(
            MESSAGES.into(),
            samples.iter().map(|s| s.messages).collect::<Vec<_>>(),
        ),
        Column::new(
            LENGTH.into(),
            samples.iter().map(|s| s.length).collect::<Vec<_>>(),
        ),
        Column::new(
            FIRST.into(),
            samples
                .iter()
                .map(|s| s.first_unix_time)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            LAST.into(),
            samples.iter().map(|s| s.last_unix_time).collect::<Vec<_>>(),
        ),
    ])?;
    ParquetWriter::new(File::create(path)?)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut frame)?;
    Ok(())
}

pub fn read_parquet(path: &Path) -> PolarsResult<Vec<Sample>> {
    let frame = ParquetReader::new(File::open(path)?).finish()?;
    let text = frame.column(TEXT)?.str()?;
    let session = frame.column(SESSION)?.u32()?;
    let messages = frame.column(MESSAGES)?.u32()?;
    let length = frame.column(LENGTH)?.u32()?;
    let first = frame.column(FIRST)?.i64()?;
    let last = frame.column(LAST)?.i64()?;
    Ok((0..frame.height())
        .map(|i| Sample {
            text: text.get(i).unwrap_or("").to_owned(),
            session: session.get(i).unwrap_or(0),
            messages: messages.get(i).unwrap_or(0),
            length: length.get(i).unwrap_or(0),
            first_unix_time: first.get(i).unwrap_or(0),
            last_unix_time: last.get(i).unwrap_or(0),
        })
        .collect())
}

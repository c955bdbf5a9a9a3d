//! The lazy polars query from `messages.parquet` to conversation turns: text-bearing
//! messages in time order, a session number that grows at every long pause, and optionally
//! consecutive messages of one author merged into one turn.

use std::path::Path;

use polars::prelude::*;
use tigerflow_telegram::columns as c;

/// One turn of a conversation (a message, or merged consecutive messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Turn {
    pub session: u32,
    pub unix_time: i64,
    pub author_id: String,
    pub author: String,
    pub text: String,
    /// How many messages were merged into this turn.
    pub messages: u32,
}

/// What the query kept and dropped, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct TurnCounts {
    pub messages_in: u64,
    pub dropped_service: u64,
    /// Media without caption, whitespace-only text.
    pub dropped_empty: u64,
    pub messages_kept: u64,
    pub turns: u64,
    pub sessions: u64,
}

const SESSION: &str = "session";

/// Reads the messages table and builds the turns.
pub(crate) fn load_turns(
    path: &Path,
    session_gap_seconds: i64,
    merge: bool,
) -> PolarsResult<(Vec<Turn>, TurnCounts)> {
    let source = PlRefPath::try_from_path(path)?;
    let messages = LazyFrame::scan_parquet(source, ScanArgsParquet::default())?;

    let is_service = col(c::KIND).eq(lit("service"));
    let has_text = col(c::TEXT)
        .str()
        .strip_chars(lit(NULL))
        .str()
        .len_chars()
        .gt(lit(0));
    let counts = messages
        .clone()
        .select([
            len().alias("all"),
            is_service.clone().sum().alias("service"),
            (is_service.clone().not().and(has_text.clone().not()))
                .sum()
                .alias("empty"),
        ])
        .collect()?;
    let count = |name: &str| -> PolarsResult<u64> {
        Ok(counts
            .column(name)?
            .cast(&DataType::UInt64)?
            .u64()?
            .get(0)
            .unwrap_or(0))
    };

    let new_session = (col(c::UNIX_TIME) - col(c::UNIX_TIME).shift(lit(1)))
        .gt(lit(session_gap_seconds))
        .fill_null(lit(false));
    let turns = messages
        .filter(is_service.not().and(has_text))
        .select([
            col(c::UNIX_TIME),
            col(c::MESSAGE_ID),
            col(c::AUTHOR_ID).fill_null(lit("")),
            col(c::AUTHOR).fill_null(lit(tigerflow_telegram::DELETED_ACCOUNT)),
            col(c::TEXT),
        ])
        .sort(
            [c::UNIX_TIME, c::MESSAGE_ID],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .with_column(
            new_session
                .cast(DataType::UInt32)
                .cum_sum(false)
                .cast(DataType::UInt32)
                .alias(SESSION),
        );
    let frame = turns.collect()?;

    let sessions = frame.column(SESSION)?.u32()?;
    let times = frame.column(c::UNIX_TIME)?.i64()?;
    let author_ids = frame.column(c::AUTHOR_ID)?.str()?;
    let authors = frame.column(c::AUTHOR)?.str()?;
    let texts = frame.column(c::TEXT)?.str()?;
    let mut out: Vec<Turn> = Vec::with_capacity(frame.height());
    for i in 0..frame.height() {
        let turn = Turn {
            session: sessions.get(i).unwrap_or(0),
            unix_time: times.get(i).unwrap_or(0),
            author_id: author_ids.get(i).unwrap_or("").to_owned(),
            author: authors.get(i).unwrap_or("").to_owned(),
            text: texts.get(i).unwrap_or("").to_owned(),
            messages: 1,
        };
        // Rows are in time order, so a run of one author within one session is contiguous.
        match out.last_mut() {
            Some(prev)
                if merge && prev.session == turn.session && prev.author_id == turn.author_id =>
            {
                prev.text.push('\n');
                prev.text.push_str(&turn.text);
                prev.messages += 1;
            }
            _ => out.push(turn),
        }
    }
    let counts = TurnCounts {
        messages_in: count("all")?,
        dropped_service: count("service")?,
        dropped_empty: count("empty")?,
        messages_kept: out.iter().map(|t| u64::from(t.messages)).sum(),
        turns: out.len() as u64,
        sessions: out.last().map_or(0, |t| u64::from(t.session) + 1),
    };
    Ok((out, counts))
}

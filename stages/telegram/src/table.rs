//! The messages table: the one place that knows the column layout of `messages.parquet`.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::message::Message;

/// Column names, shared with the readers of `messages.parquet` (the `chunk` stage).
pub mod columns {
    pub const CHAT_ID: &str = "chat_id";
    pub const MESSAGE_ID: &str = "message_id";
    pub const UNIX_TIME: &str = "unix_time";
    pub const EDITED_UNIX_TIME: &str = "edited_unix_time";
    pub const AUTHOR_ID: &str = "author_id";
    pub const AUTHOR: &str = "author";
    pub const TEXT: &str = "text";
    pub const REPLY_TO: &str = "reply_to";
    pub const KIND: &str = "kind";
    pub const FORWARDED: &str = "forwarded";
    pub const DETAIL: &str = "detail";
}

/// Builds the table of one chat's messages.
pub(crate) fn to_frame(chat_id: Option<i64>, messages: &[Message]) -> PolarsResult<DataFrame> {
    use columns::*;
    let n = messages.len();
    let col_i64 = |name: &str, f: &dyn Fn(&Message) -> i64| {
        Column::new(name.into(), messages.iter().map(f).collect::<Vec<i64>>())
    };
    let col_opt_i64 = |name: &str, f: &dyn Fn(&Message) -> Option<i64>| {
        Column::new(
            name.into(),
            messages.iter().map(f).collect::<Vec<Option<i64>>>(),
        )
    };
    let col_opt_str = |name: &str, f: &dyn Fn(&Message) -> Option<&str>| {
        Column::new(
            name.into(),
            messages.iter().map(f).collect::<Vec<Option<&str>>>(),
        )
    };
    DataFrame::new_infer_height(vec![
        Column::new(CHAT_ID.into(), vec![chat_id; n]),
        col_i64(MESSAGE_ID, &|m| m.id),
        col_i64(UNIX_TIME, &|m| m.unix_time),
        col_opt_i64(EDITED_UNIX_TIME, &|m| m.edited_unix_time),
        col_opt_str(AUTHOR_ID, &|m| m.author_id.as_deref()),
        col_opt_str(AUTHOR, &|m| m.author_name.as_deref()),
        Column::new(
            TEXT.into(),
            messages
                .iter()
                .map(|m| m.text.as_str())
                .collect::<Vec<&str>>(),
        ),
        col_opt_i64(REPLY_TO, &|m| m.reply_to),
        Column::new(
            KIND.into(),
            messages
                .iter()
                .map(|m| m.kind.as_str())
                .collect::<Vec<&str>>(),
        ),
        Column::new(
            FORWARDED.into(),
            messages.iter().map(|m| m.forwarded).collect::<Vec<bool>>(),
        ),
        col_opt_str(DETAIL, &|m| m.detail.as_deref()),
    ])
}

/// Writes a table as zstd-compressed parquet.
pub(crate) fn write_parquet(frame: &mut DataFrame, path: &Path) -> PolarsResult<()> {
    let file = File::create(path)?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(frame)?;
    Ok(())
}

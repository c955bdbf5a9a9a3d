//! The `telegram` stage: reads a Telegram Desktop JSON export (`result.json`, either layout),
//! streaming its `messages` array, and writes the selected chat as `messages.parquet`.
//!
//! The parser (everything but the stage) has no polars dependency so that the fuzz target
//! builds it alone.

mod authors;
mod error;
mod escapes;
mod export;
mod local_time;
mod message;
mod stats;
mod text;

#[cfg(feature = "stage")]
mod stage;
#[cfg(feature = "stage")]
mod table;

pub use authors::DELETED_ACCOUNT;
pub use error::ExportError;
pub use export::{ChatInfo, ChatSelector, Export, read_export};
pub use local_time::parse_offset;
pub use message::{Kind, Message};
pub use stats::ParseStats;

#[cfg(feature = "stage")]
pub use stage::{TelegramParams, TelegramStage};
#[cfg(feature = "stage")]
pub use table::columns;

/// Reads an export and resolves authors: every message of a `from_id` carries the latest
/// display name seen for it, and dangling replies are counted.
pub fn parse_export<R: std::io::Read>(
    reader: R,
    selector: &ChatSelector,
    local_offset_seconds: i64,
) -> Result<Export, ExportError> {
    let mut export = read_export(reader, selector, local_offset_seconds)?;
    authors::apply_latest_names(&mut export.messages);
    export.stats.dangling_replies = authors::count_dangling_replies(&export.messages);
    Ok(export)
}

/// Adds this crate's stage kinds to the registry.
#[cfg(feature = "stage")]
pub fn register(registry: &mut tigerflow_stage::Registry) {
    registry.add(TelegramStage);
}

//! Recoverable oddities met while parsing, counted for the report instead of failing.

use std::collections::BTreeMap;

use serde::Serialize;

/// Counts of what the parser saw in the selected chat.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ParseStats {
    /// Messages by kind (`text`, `media`, `poll`, `service`).
    pub by_kind: BTreeMap<String, u64>,
    /// `type: "unsupported"` messages (no date, no text): skipped.
    pub unsupported: u64,
    /// Messages whose author is a deleted account (`from: null`).
    pub deleted_authors: u64,
    /// Messages dated from the local `date` string because `date_unixtime` is missing
    /// (exports older than Telegram Desktop 3.7.6).
    pub local_dates: u64,
    /// Replies whose target is not in the chat (deleted, out of range, or in another chat).
    pub dangling_replies: u64,
    /// Message keys this parser does not know, by name; their values are ignored.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Text entity types this parser does not know, by name; their text is kept.
    pub unknown_entity_types: BTreeMap<String, u64>,
    /// `\xNN` escapes (invalid JSON that Telegram Desktop writes) repaired in the whole file.
    pub repaired_escapes: u64,
    /// Whether the file started with a UTF-8 byte order mark.
    pub byte_order_mark: bool,
}

impl ParseStats {
    pub(crate) fn count_unknown_field(&mut self, key: &str) {
        *self.unknown_fields.entry(key.to_owned()).or_default() += 1;
    }

    pub(crate) fn count_unknown_entity(&mut self, kind: &str) {
        *self
            .unknown_entity_types
            .entry(kind.to_owned())
            .or_default() += 1;
    }
}

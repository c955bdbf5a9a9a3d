//! Authors are keyed by `from_id`: `from` is the name at export time, can be null (deleted
//! accounts), shared by two people, or change between 100-message slices of one export.

use std::collections::{HashMap, HashSet};

use crate::message::Message;

/// What Telegram shows for an account whose name is gone.
pub const DELETED_ACCOUNT: &str = "Deleted Account";

/// Gives every message of an author the last non-null display name seen for its `from_id`.
pub(crate) fn apply_latest_names(messages: &mut [Message]) {
    let mut latest: HashMap<String, String> = HashMap::new();
    for message in messages.iter() {
        if let (Some(id), Some(name)) = (&message.author_id, &message.author_name) {
            latest.insert(id.clone(), name.clone());
        }
    }
    for message in messages.iter_mut() {
        if let Some(id) = &message.author_id {
            let name = latest.get(id).map_or(DELETED_ACCOUNT, String::as_str);
            if message.author_name.as_deref() != Some(name) {
                message.author_name = Some(name.to_owned());
            }
        }
    }
}

/// Replies whose target message is not in the chat.
pub(crate) fn count_dangling_replies(messages: &[Message]) -> u64 {
    let ids: HashSet<i64> = messages.iter().map(|m| m.id).collect();
    messages
        .iter()
        .filter_map(|m| m.reply_to)
        .filter(|target| !ids.contains(target))
        .count() as u64
}

//! Feeds arbitrary bytes to the Telegram export parser. It must never panic or hang, and
//! every error must be a single line (the stage prints it as one `error:` line).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tigerflow_telegram::{ChatSelector, parse_export};

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chat selection, so that account-export paths are reached too.
    let (selector, json) = match data.split_first() {
        Some((b, rest)) if b % 4 == 1 => (ChatSelector { id: Some(i64::from(*b >> 2)), name: None }, rest),
        Some((b, rest)) if b % 4 == 2 => (ChatSelector { id: None, name: Some("Ana".into()) }, rest),
        Some((_, rest)) => (ChatSelector::default(), rest),
        None => (ChatSelector::default(), data),
    };
    match parse_export(json, &selector, 3600) {
        Ok(export) => {
            for message in &export.messages {
                assert!(message.author_id.is_none() || message.author_name.is_some());
            }
        }
        Err(err) => {
            let line = err.to_string();
            assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
        }
    }
});

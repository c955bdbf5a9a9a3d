//! The two layouts of `result.json` (telegram-format.md §1): a single chat (the dialog object
//! is the document) or a whole account (`chats.list` and `left_chats.list` of dialogs).
//!
//! The `messages` arrays are streamed: only the selected chat's messages are kept, as
//! [`Message`] records, so memory is bounded by that chat and never by a JSON tree.

use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::error::ExportError;
use crate::escapes::EscapeRepair;
use crate::message::{Message, MessageSeed};
use crate::stats::ParseStats;

/// Which chat of an account export to read. Single-chat exports are checked against it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatSelector {
    pub id: Option<i64>,
    pub name: Option<String>,
}

/// A dialog of the export, as listed in errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatInfo {
    pub id: Option<i64>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub messages: u64,
}

impl fmt::Display for ChatInfo {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}")?,
            None => f.write_str("(no id)")?,
        }
        match &self.name {
            Some(name) => write!(f, " {name:?}")?,
            None => f.write_str(" (no name)")?,
        }
        write!(
            f,
            " ({}, {} messages)",
            self.kind.as_deref().unwrap_or("unknown type"),
            self.messages
        )
    }
}

/// The selected chat's messages, in file order.
#[derive(Debug)]
pub struct Export {
    pub chat: ChatInfo,
    pub messages: Vec<Message>,
    pub stats: ParseStats,
}

/// Reads an export from `reader` (a whole `result.json`), keeping the selected chat.
/// `local_offset_seconds` dates messages of exports older than `date_unixtime`.
pub fn read_export<R: Read>(
    reader: R,
    selector: &ChatSelector,
    local_offset_seconds: i64,
) -> Result<Export, ExportError> {
    let mut repair = EscapeRepair::new(reader);
    let mut collector = Collector {
        selector,
        local_offset_seconds,
        chats: Vec::new(),
        matches: Vec::new(),
        saw_dialog_list: false,
    };
    {
        let buffered = std::io::BufReader::with_capacity(256 * 1024, &mut repair);
        let mut de = serde_json::Deserializer::from_reader(buffered);
        DialogSeed {
            collector: &mut collector,
            top_level: true,
        }
        .deserialize(&mut de)
        .map_err(ExportError::from_json)?;
        de.end().map_err(ExportError::from_json)?;
    }
    let (chat, messages, mut stats) = collector.finish()?;
    stats.repaired_escapes = repair.repaired();
    stats.byte_order_mark = repair.had_bom();
    Ok(Export {
        chat,
        messages,
        stats,
    })
}

struct Collector<'a> {
    selector: &'a ChatSelector,
    local_offset_seconds: i64,
    /// Every dialog seen, for error messages.
    chats: Vec<ChatInfo>,
    /// Dialogs that match the selector, with their messages.
    matches: Vec<(ChatInfo, Vec<Message>, ParseStats)>,
    saw_dialog_list: bool,
}

impl Collector<'_> {
    /// Whether a dialog may be the selected one, knowing only the keys read so far.
    fn may_select(&self, partial: &ChatInfo) -> bool {
        let id_ok = match (self.selector.id, partial.id) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        let name_ok = match (&self.selector.name, &partial.name) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        let first =
            self.selector.id.is_some() || self.selector.name.is_some() || self.matches.is_empty();
        id_ok && name_ok && first
    }

    fn selects(&self, chat: &ChatInfo) -> bool {
        self.selector.id.is_none_or(|want| chat.id == Some(want))
            && self
                .selector
                .name
                .as_ref()
                .is_none_or(|want| chat.name.as_ref() == Some(want))
    }

    fn finish(mut self) -> Result<(ChatInfo, Vec<Message>, ParseStats), ExportError> {
        if self.chats.is_empty() && !self.saw_dialog_list {
            return Err(ExportError::NotAnExport);
        }
        let unselected = self.selector.id.is_none() && self.selector.name.is_none();
        if unselected && self.chats.len() > 1 {
            return Err(ExportError::ChooseChat { chats: self.chats });
        }
        match self.matches.len() {
            1 => Ok(self.matches.pop().expect("one match")),
            0 => {
                let wanted = match (&self.selector.id, &self.selector.name) {
                    (Some(id), Some(name)) => format!("with id {id} named {name:?}"),
                    (Some(id), None) => format!("with id {id}"),
                    (None, Some(name)) => format!("named {name:?}"),
                    (None, None) => "with messages".to_owned(),
                };
                Err(ExportError::ChatNotFound {
                    wanted,
                    chats: self.chats,
                })
            }
            count => Err(ExportError::AmbiguousName {
                name: self.selector.name.clone().unwrap_or_default(),
                count,
                chats: self.matches.into_iter().map(|(chat, _, _)| chat).collect(),
            }),
        }
    }
}

/// A dialog object; at the top level it may instead be an account export.
struct DialogSeed<'a, 'b> {
    collector: &'a mut Collector<'b>,
    top_level: bool,
}

impl<'de> DeserializeSeed<'de> for DialogSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

enum DialogKey {
    Id,
    Type,
    Name,
    Messages,
    Chats,
    Other,
}

impl<'de> de::Deserialize<'de> for DialogKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = DialogKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DialogKey, E> {
                Ok(match v {
                    "id" => DialogKey::Id,
                    "type" => DialogKey::Type,
                    "name" => DialogKey::Name,
                    "messages" => DialogKey::Messages,
                    "chats" | "left_chats" => DialogKey::Chats,
                    _ => DialogKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Visitor<'de> for DialogSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.top_level {
            f.write_str("a JSON object (a Telegram Desktop export)")
        } else {
            f.write_str("a chat object")
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut info = ChatInfo::default();
        let mut kept = None;
        let mut is_dialog = false;
        while let Some(key) = map.next_key::<DialogKey>()? {
            match key {
                DialogKey::Id => info.id = Some(map.next_value()?),
                DialogKey::Type => info.kind = map.next_value()?,
                DialogKey::Name => info.name = map.next_value()?,
                DialogKey::Messages => {
                    is_dialog = true;
                    if self.collector.may_select(&info) {
                        let mut stats = ParseStats::default();
                        let messages = map.next_value_seed(MessagesSeed {
                            stats: &mut stats,
                            local_offset_seconds: self.collector.local_offset_seconds,
                        })?;
                        info.messages = messages.len() as u64;
                        kept = Some((messages, stats));
                    } else {
                        info.messages = map.next_value_seed(CountSeed)?;
                    }
                }
                DialogKey::Chats if self.top_level => {
                    self.collector.saw_dialog_list = true;
                    map.next_value_seed(DialogListSeed {
                        collector: self.collector,
                    })?;
                }
                DialogKey::Chats | DialogKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !is_dialog {
            if !self.top_level {
                return Err(de::Error::custom(format!(
                    "chat {} has no `messages` array",
                    info.id
                        .map_or_else(|| "(no id)".to_owned(), |id| id.to_string())
                )));
            }
            return Ok(());
        }
        if let Some((messages, stats)) = kept
            && self.collector.selects(&info)
        {
            self.collector.matches.push((info.clone(), messages, stats));
        }
        self.collector.chats.push(info);
        Ok(())
    }
}

/// `{"about": ..., "list": [dialog, ...]}`.
struct DialogListSeed<'a, 'b> {
    collector: &'a mut Collector<'b>,
}

impl<'de> DeserializeSeed<'de> for DialogListSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DialogListSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `list` of chats")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "list" {
                map.next_value_seed(DialogSeqSeed {
                    collector: self.collector,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct DialogSeqSeed<'a, 'b> {
    collector: &'a mut Collector<'b>,
}

impl<'de> DeserializeSeed<'de> for DialogSeqSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for DialogSeqSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of chats")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(DialogSeed {
                collector: self.collector,
                top_level: false,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// The `messages` array of the selected chat.
struct MessagesSeed<'a> {
    stats: &'a mut ParseStats,
    local_offset_seconds: i64,
}

impl<'de> DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = Vec<Message>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Message>, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = Vec<Message>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Message>, A::Error> {
        let mut messages = Vec::new();
        while let Some(message) = seq.next_element_seed(MessageSeed {
            stats: self.stats,
            local_offset_seconds: self.local_offset_seconds,
        })? {
            messages.extend(message);
        }
        Ok(messages)
    }
}

/// Skips another chat's `messages` array, counting its elements.
struct CountSeed;

impl<'de> DeserializeSeed<'de> for CountSeed {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CountSeed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of messages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut count = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

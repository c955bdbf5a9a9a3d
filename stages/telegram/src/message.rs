//! One message object of the `messages` array, read field by field (telegram-format.md §3).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::local_time;
use crate::stats::ParseStats;
use crate::text::{FlatText, TextSeed};

/// What a message is, as far as training text is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain text.
    Text,
    /// A photo, file, sticker, voice… The text is the caption, possibly empty.
    Media,
    /// A poll; the text is the question and one `- answer` line per answer.
    Poll,
    /// A service message (joins, pins, calls…); never training text.
    Service,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Media => "media",
            Kind::Poll => "poll",
            Kind::Service => "service",
        }
    }
}

/// A message as the stage stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: i64,
    pub kind: Kind,
    /// Seconds since the epoch, UTC.
    pub unix_time: i64,
    pub edited_unix_time: Option<i64>,
    /// `user123`, `channel123` or `chat123`; `None` for actor-less service messages.
    pub author_id: Option<String>,
    /// The display name in this message; `None` for deleted accounts.
    pub author_name: Option<String>,
    pub text: String,
    pub reply_to: Option<i64>,
    pub forwarded: bool,
    /// `media_type`, or `photo`/`file` for media without one; the action for service messages.
    pub detail: Option<String>,
}

/// Reads one message; `None` for `type: "unsupported"`, which has no date or text.
pub(crate) struct MessageSeed<'a> {
    pub stats: &'a mut ParseStats,
    /// Offset of the exporting machine's clock, for exports without `date_unixtime`.
    pub local_offset_seconds: i64,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = Option<Message>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

/// Message keys that Telegram Desktop writes and that do not matter for training text.
const IGNORED_KEYS: &[&str] = &[
    "text_entities",
    "author",
    "saved_from",
    "reply_to_peer_id",
    "via_bot",
    "photo_file_size",
    "width",
    "height",
    "media_spoiler",
    "self_destruct_period_seconds",
    "file_name",
    "file_size",
    "thumbnail",
    "thumbnail_file_size",
    "mime_type",
    "duration_seconds",
    "performer",
    "title",
    "contact_information",
    "contact_vcard",
    "location_information",
    "live_location_period_seconds",
    "place_name",
    "address",
    "game_title",
    "game_description",
    "game_link",
    "game_message_id",
    "score",
    "invoice_information",
    "todo_list",
    "giveaway_information",
    "giveaway_results",
    "paid_stars_amount",
    "inline_bot_buttons",
    "reactions",
    "members",
    "inviter",
    "message_id",
    "discard_reason",
    "information_text",
    "values",
    "period",
    "duration",
    "emoticon",
    "distance",
    "to",
    "gift_text",
    "new_title",
    "new_icon_emoji_id",
    "photo_width",
    "photo_height",
    "amount",
    "currency",
    "boosts",
    "stars",
    "cost",
    "is_limited",
    "is_anonymous",
];

enum Field {
    Id,
    Type,
    Date,
    DateUnixtime,
    Edited,
    EditedUnixtime,
    From,
    FromId,
    Actor,
    ActorId,
    Action,
    Text,
    ReplyTo,
    ForwardedFrom,
    MediaType,
    Photo,
    File,
    StickerEmoji,
    Poll,
    Ignored,
    Unknown(String),
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "id" => Field::Id,
                    "type" => Field::Type,
                    "date" => Field::Date,
                    "date_unixtime" => Field::DateUnixtime,
                    "edited" => Field::Edited,
                    "edited_unixtime" => Field::EditedUnixtime,
                    "from" => Field::From,
                    "from_id" => Field::FromId,
                    "actor" => Field::Actor,
                    "actor_id" => Field::ActorId,
                    "action" => Field::Action,
                    "text" => Field::Text,
                    "reply_to_message_id" => Field::ReplyTo,
                    "forwarded_from" => Field::ForwardedFrom,
                    "media_type" => Field::MediaType,
                    "photo" => Field::Photo,
                    "file" => Field::File,
                    "sticker_emoji" => Field::StickerEmoji,
                    "poll" => Field::Poll,
                    _ if IGNORED_KEYS.contains(&v) => Field::Ignored,
                    _ => Field::Unknown(v.to_owned()),
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

#[derive(Deserialize)]
struct Poll {
    #[serde(default)]
    question: FlatText,
    #[serde(default)]
    answers: Vec<PollAnswer>,
}

#[derive(Deserialize)]
struct PollAnswer {
    #[serde(default)]
    text: FlatText,
}

/// `from_id` / `actor_id`: `"user123"` since Telegram Desktop 2.7.2, a bare integer before.
struct PeerId(String);

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PeerVisitor;
        impl Visitor<'_> for PeerVisitor {
            type Value = PeerId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a peer id (\"user123\" or an integer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PeerId, E> {
                Ok(PeerId(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PeerId, E> {
                Ok(PeerId(legacy_peer_id(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PeerId, E> {
                Ok(PeerId(format!("peer{v}")))
            }
        }
        deserializer.deserialize_any(PeerVisitor)
    }
}

/// Integer peer ids of exports from 1.4.8–2.7.1: a bare user id, or (from 2.4.1) a PeerId
/// with the type in the high bits (`1<<32` user, `2<<32` group or channel).
fn legacy_peer_id(v: u64) -> String {
    match v >> 32 {
        0 | 1 => format!("user{}", v & 0xFFFF_FFFF),
        2 => format!("chat{}", v & 0xFFFF_FFFF),
        _ => format!("peer{v}"),
    }
}

/// `date_unixtime` is a string holding an integer; accept a bare integer too.
struct UnixTime(i64);

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimeVisitor;
        impl Visitor<'_> for TimeVisitor {
            type Value = UnixTime;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("unix seconds as a string of digits")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnixTime, E> {
                v.parse()
                    .map(UnixTime)
                    .map_err(|_| E::custom(format!("{v:?} is not unix seconds")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnixTime, E> {
                Ok(UnixTime(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnixTime, E> {
                i64::try_from(v)
                    .map(UnixTime)
                    .map_err(|_| E::custom(format!("{v} is out of range for unix seconds")))
            }
        }
        deserializer.deserialize_any(TimeVisitor)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = Option<Message>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut kind = None::<String>;
        let mut date = None::<String>;
        let mut unix_time = None;
        let mut edited = None::<String>;
        let mut edited_unix_time = None;
        let mut from = None::<Option<String>>;
        let mut from_id = None;
        let mut actor_id = None;
        let mut action = None::<String>;
        let mut text = String::new();
        let mut reply_to = None;
        let mut forwarded = false;
        let mut media = None::<String>;
        let mut poll = None::<Poll>;
        let mut sticker_emoji = None::<String>;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Id => id = Some(map.next_value::<i64>()?),
                Field::Type => kind = Some(map.next_value()?),
                Field::Date => date = Some(map.next_value()?),
                Field::DateUnixtime => unix_time = Some(map.next_value::<UnixTime>()?.0),
                Field::Edited => edited = Some(map.next_value()?),
                Field::EditedUnixtime => edited_unix_time = Some(map.next_value::<UnixTime>()?.0),
                Field::From => from = Some(map.next_value()?),
                Field::FromId => from_id = Some(map.next_value::<PeerId>()?.0),
                Field::ActorId => actor_id = Some(map.next_value::<PeerId>()?.0),
                Field::Action => action = Some(map.next_value()?),
                Field::Text => {
                    // A duplicate `text` key (Telegram Desktop 5.6–5.9.1 star gifts): the last wins.
                    text.clear();
                    map.next_value_seed(TextSeed {
                        out: &mut text,
                        stats: self.stats,
                    })?;
                }
                Field::ReplyTo => reply_to = Some(map.next_value::<i64>()?),
                Field::ForwardedFrom => {
                    map.next_value::<IgnoredAny>()?;
                    forwarded = true;
                }
                Field::MediaType => media = Some(map.next_value()?),
                Field::Photo => {
                    map.next_value::<IgnoredAny>()?;
                    media.get_or_insert_with(|| "photo".to_owned());
                }
                Field::File => {
                    map.next_value::<IgnoredAny>()?;
                    media.get_or_insert_with(|| "file".to_owned());
                }
                Field::StickerEmoji => sticker_emoji = Some(map.next_value()?),
                Field::Poll => poll = Some(map.next_value()?),
                Field::Actor | Field::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                }
                Field::Unknown(key) => {
                    map.next_value::<IgnoredAny>()?;
                    self.stats.count_unknown_field(&key);
                }
            }
        }
        let id = id.ok_or_else(|| de::Error::custom("a message has no `id`"))?;
        let kind = match kind.as_deref() {
            Some("unsupported") => {
                self.stats.unsupported += 1;
                return Ok(None);
            }
            Some("service") => Kind::Service,
            Some("message") | None if poll.is_some() => Kind::Poll,
            Some("message") | None if media.is_some() => Kind::Media,
            Some("message") | None => Kind::Text,
            Some(other) => {
                return Err(de::Error::custom(format!(
                    "message {id}: unknown `type` {other:?} (expected \"message\", \"service\" or \"unsupported\")"
                )));
            }
        };
        let unix_time = match (unix_time, date) {
            (Some(t), _) => t,
            (None, Some(date)) => {
                self.stats.local_dates += 1;
                local_time::parse_local(&date, self.local_offset_seconds).ok_or_else(|| {
                    de::Error::custom(format!(
                        "message {id}: `date` {date:?} is not YYYY-MM-DDTHH:MM:SS"
                    ))
                })?
            }
            (None, None) => {
                return Err(de::Error::custom(format!(
                    "message {id} has no `date` or `date_unixtime`"
                )));
            }
        };
        if edited_unix_time.is_none() {
            // Before 2.1.9 `edited` was always written, as the local epoch when never edited.
            edited_unix_time = edited
                .and_then(|e| local_time::parse_local(&e, self.local_offset_seconds))
                .filter(|&t| t > 86_400);
        }
        if let Some(poll) = poll {
            text = poll.question.0;
            for answer in poll.answers {
                text.push_str("\n- ");
                text.push_str(&answer.text.0);
            }
        }
        if text.is_empty() && kind == Kind::Media {
            // A sticker's emoji is what a reader of the chat sees of it.
            text = sticker_emoji.unwrap_or_default();
        }
        let (author_id, author_name, detail) = if kind == Kind::Service {
            (actor_id, None, action)
        } else {
            let name = from.flatten();
            if name.is_none() {
                self.stats.deleted_authors += 1;
            }
            (from_id, name, media)
        };
        *self
            .stats
            .by_kind
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        Ok(Some(Message {
            id,
            kind,
            unix_time,
            edited_unix_time,
            author_id,
            author_name,
            text,
            reply_to,
            forwarded,
            detail,
        }))
    }
}

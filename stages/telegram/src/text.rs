//! Message text: a JSON string, or an array of bare strings and entity objects
//! (`{"type": "bold", "text": "..."}`), flattened to plain text by concatenating the parts
//! without separators (telegram-format.md §4).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::stats::ParseStats;

/// Entity types written by Telegram Desktop up to 2025 (`export_output_json.cpp`).
const KNOWN_ENTITY_TYPES: &[&str] = &[
    "plain",
    "unknown",
    "mention",
    "mention_name",
    "hashtag",
    "cashtag",
    "bot_command",
    "link",
    "text_link",
    "email",
    "phone",
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "code",
    "pre",
    "blockquote",
    "bank_card",
    "custom_emoji",
];

/// Appends the flattened text of a `text` value to `out`.
pub(crate) struct TextSeed<'a> {
    pub out: &'a mut String,
    pub stats: &'a mut ParseStats,
}

impl<'de> DeserializeSeed<'de> for TextSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a text string or an array of text parts")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push_str(v);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(PartSeed {
                out: self.out,
                stats: self.stats,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One element of a text array: a bare string or an entity object.
struct PartSeed<'a> {
    out: &'a mut String,
    stats: &'a mut ParseStats,
}

impl<'de> DeserializeSeed<'de> for PartSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PartSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a text part (a string or an entity object)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push_str(v);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<EntityKey>()? {
            match key {
                EntityKey::Type => {
                    let kind: String = map.next_value()?;
                    if !KNOWN_ENTITY_TYPES.contains(&kind.as_str()) {
                        self.stats.count_unknown_entity(&kind);
                    }
                }
                EntityKey::Text => map.next_value_seed(StrSeed(self.out))?,
                EntityKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Appends a JSON string to `out` without an intermediate allocation.
struct StrSeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for StrSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

enum EntityKey {
    Type,
    Text,
    Other,
}

impl<'de> de::Deserialize<'de> for EntityKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = EntityKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an entity key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EntityKey, E> {
                Ok(match v {
                    "type" => EntityKey::Type,
                    "text" => EntityKey::Text,
                    _ => EntityKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// Text in a place where unknown entity types are not worth counting (poll questions and
/// answers): deserializes to the flattened string.
#[derive(Default)]
pub(crate) struct FlatText(pub String);

impl<'de> de::Deserialize<'de> for FlatText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = String::new();
        TextSeed {
            out: &mut out,
            stats: &mut ParseStats::default(),
        }
        .deserialize(deserializer)?;
        Ok(FlatText(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flatten(json: &str) -> (String, ParseStats) {
        let mut out = String::new();
        let mut stats = ParseStats::default();
        let mut de = serde_json::Deserializer::from_str(json);
        TextSeed {
            out: &mut out,
            stats: &mut stats,
        }
        .deserialize(&mut de)
        .unwrap();
        (out, stats)
    }

    #[test]
    fn a_string_is_its_own_text() {
        assert_eq!(flatten(r#""olá\nmundo""#).0, "olá\nmundo");
    }

    #[test]
    fn arrays_concatenate_parts_without_separators() {
        let json = r#"["see ", {"type": "link", "text": "https://x.org"}, "!",
            {"type": "text_link", "text": "here", "href": "https://y.org"}, ""]"#;
        assert_eq!(flatten(json).0, "see https://x.org!here");
    }

    #[test]
    fn unknown_entity_types_keep_their_text_and_are_counted() {
        let (text, stats) =
            flatten(r#"[{"type": "sparkle", "text": "✨"}, {"type": "bold", "text": "b"}]"#);
        assert_eq!(text, "✨b");
        assert_eq!(stats.unknown_entity_types.get("sparkle"), Some(&1));
        assert_eq!(stats.unknown_entity_types.len(), 1);
    }

    #[test]
    fn a_number_is_a_type_error() {
        let mut de = serde_json::Deserializer::from_str("12");
        let err = TextSeed {
            out: &mut String::new(),
            stats: &mut ParseStats::default(),
        }
        .deserialize(&mut de)
        .unwrap_err();
        assert!(
            err.to_string().contains("a text string or an array"),
            "{err}"
        );
    }
}

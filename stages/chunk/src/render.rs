//! Turning a turn into training text: the speaker's label, scrubbed text, the template.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

use crate::params::{ChunkParams, Scrub, Speakers};
use crate::turns::Turn;

pub(crate) struct Renderer {
    template: Vec<Piece>,
    speakers: Speakers,
    speaker_map: BTreeMap<String, String>,
    scrubbers: Vec<Scrubber>,
    /// Pseudonyms handed out so far, by author id, in order of first appearance.
    pseudonyms: HashMap<String, String>,
}

/// A template cut once into literal text and placeholders, so that rendering is one pass and
/// a name that itself contains `{text}` is never substituted twice.
#[derive(Debug, PartialEq)]
enum Piece {
    Literal(String),
    Name,
    Text,
}

fn pieces(template: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let next = [("{name}", Piece::Name), ("{text}", Piece::Text)]
            .into_iter()
            .filter_map(|(tag, piece)| rest.find(tag).map(|at| (at, tag.len(), piece)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, len, piece)) = next else {
            out.push(Piece::Literal(rest.to_owned()));
            break;
        };
        if at > 0 {
            out.push(Piece::Literal(rest[..at].to_owned()));
        }
        out.push(piece);
        rest = &rest[at + len..];
    }
    out
}

struct Scrubber {
    pattern: Regex,
    placeholder: &'static str,
    /// Matches with fewer digits are left alone (dates and times look like short numbers).
    min_digits: usize,
}

impl Scrubber {
    fn new(kind: Scrub) -> Self {
        let (pattern, placeholder, min_digits) = match kind {
            Scrub::Url => (r#"(?:https?://|www\.)[^\s<>"]+"#, "<url>", 0),
            Scrub::Email => (r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+", "<email>", 0),
            Scrub::Phone => (r"\+?\d[\d ().-]{6,}\d", "<phone>", 9),
        };
        Scrubber {
            pattern: Regex::new(pattern).expect("the scrub patterns are valid"),
            placeholder,
            min_digits,
        }
    }

    fn apply(&self, text: &str) -> String {
        self.pattern
            .replace_all(text, |caps: &regex::Captures| {
                let found = &caps[0];
                if found.chars().filter(char::is_ascii_digit).count() >= self.min_digits {
                    self.placeholder.to_owned()
                } else {
                    found.to_owned()
                }
            })
            .into_owned()
    }
}

impl Renderer {
    pub(crate) fn new(params: &ChunkParams) -> Self {
        let mut kinds = params.scrub.clone();
        // Links first: they may hold digits and `@`.
        kinds.sort_by_key(|k| match k {
            Scrub::Url => 0,
            Scrub::Email => 1,
            Scrub::Phone => 2,
        });
        kinds.dedup();
        Renderer {
            template: pieces(&params.template),
            speakers: params.speakers,
            speaker_map: params.speaker_map.clone(),
            scrubbers: kinds.into_iter().map(Scrubber::new).collect(),
            pseudonyms: HashMap::new(),
        }
    }

    /// The label of a speaker: the explicit map (by id, then by name), else the display name
    /// or a pseudonym numbered by first appearance.
    pub(crate) fn speaker(&mut self, author_id: &str, author: &str) -> String {
        if let Some(name) = self
            .speaker_map
            .get(author_id)
            .or_else(|| self.speaker_map.get(author))
        {
            return name.clone();
        }
        match self.speakers {
            Speakers::Names => author.to_owned(),
            Speakers::Pseudonyms => {
                let next = self.pseudonyms.len() + 1;
                self.pseudonyms
                    .entry(author_id.to_owned())
                    .or_insert_with(|| format!("Friend {next}"))
                    .clone()
            }
        }
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        self.scrubbers
            .iter()
            .fold(text.to_owned(), |text, scrubber| scrubber.apply(&text))
    }

    /// Renders a turn; returns the speaker label too (for the report).
    pub(crate) fn render(&mut self, turn: &Turn) -> (String, String) {
        let speaker = self.speaker(&turn.author_id, &turn.author);
        let text = self.scrub(&turn.text);
        let mut rendered = String::with_capacity(speaker.len() + text.len() + 8);
        for piece in &self.template {
            rendered.push_str(match piece {
                Piece::Literal(literal) => literal,
                Piece::Name => &speaker,
                Piece::Text => &text,
            });
        }
        (rendered, speaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(id: &str, name: &str, text: &str) -> Turn {
        Turn {
            session: 0,
            unix_time: 0,
            author_id: id.into(),
            author: name.into(),
            text: text.into(),
            messages: 1,
        }
    }

    #[test]
    fn placeholders_are_substituted_once() {
        let params = ChunkParams {
            template: "<{name}> {text}|".to_owned(),
            ..ChunkParams::default()
        };
        let mut r = Renderer::new(&params);
        let (line, _) = r.render(&turn("u1", "{text} fan", "hi {name}"));
        assert_eq!(line, "<{text} fan> hi {name}|");
    }

    #[test]
    fn default_template_is_the_reference_format() {
        let mut r = Renderer::new(&ChunkParams::default());
        assert_eq!(
            r.render(&turn("user1", "Alice", "first message")).0,
            "### Alice: first message"
        );
    }

    #[test]
    fn pseudonyms_follow_first_appearance_and_the_map_wins() {
        let params = ChunkParams {
            speakers: Speakers::Pseudonyms,
            speaker_map: [("Carla".to_owned(), "C".to_owned())].into(),
            ..ChunkParams::default()
        };
        let mut r = Renderer::new(&params);
        assert_eq!(r.speaker("user9", "Bob"), "Friend 1");
        assert_eq!(r.speaker("user3", "Ana"), "Friend 2");
        assert_eq!(r.speaker("user9", "Bob B."), "Friend 1");
        assert_eq!(r.speaker("user5", "Carla"), "C");
    }

    #[test]
    fn scrubs_personal_data_but_not_dates() {
        let params = ChunkParams {
            scrub: vec![Scrub::Phone, Scrub::Email, Scrub::Url],
            ..ChunkParams::default()
        };
        let r = Renderer::new(&params);
        assert_eq!(
            r.scrub("call +55 (11) 98765-4321 or mail a.b@x.com.br, see https://x.org/a?b=1 on 2024-01-01 at 19:00"),
            "call <phone> or mail <email>, see <url> on 2024-01-01 at 19:00"
        );
    }
}

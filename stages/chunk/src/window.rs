//! Splitting one conversation into windows that fit the training budget.
//!
//! Windows are made of whole rendered messages; a message is cut only when it alone is
//! longer than the budget, and then into pieces that each fit. The cost of a window is the
//! sum of its messages' costs plus the separators'. With a tokenizer this is an upper bound
//! on the window's token count up to merges across message boundaries (at most a token or
//! so per boundary).

use std::ops::RangeInclusive;

/// How text is measured against the budget.
pub trait Measure {
    fn cost(&self, text: &str) -> usize;
    /// Cuts `text` (costing more than `budget`) into consecutive pieces, each costing at most
    /// `budget`, whose concatenation is `text`.
    fn split(&self, text: &str, budget: usize) -> Vec<String>;
}

/// Characters (Unicode scalar values).
pub struct Chars;

impl Measure for Chars {
    fn cost(&self, text: &str) -> usize {
        text.chars().count()
    }

    fn split(&self, text: &str, budget: usize) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some((end, _)) = rest.char_indices().nth(budget) else {
                pieces.push(rest.to_owned());
                break;
            };
            // Prefer to cut after a space in the second half of the piece.
            let half = rest.char_indices().nth(budget / 2).map_or(0, |(i, _)| i);
            let cut = rest[..end]
                .rfind(char::is_whitespace)
                .filter(|&i| i >= half)
                .map_or(end, |i| {
                    i + rest[i..].chars().next().map_or(1, char::len_utf8)
                });
            pieces.push(rest[..cut].to_owned());
            rest = &rest[cut..];
        }
        pieces
    }
}

/// Tokens of a Hugging Face tokenizer (no special tokens).
pub(crate) struct Tokens(pub tokenizers::Tokenizer);

impl Measure for Tokens {
    fn cost(&self, text: &str) -> usize {
        self.0.encode_fast(text, false).map_or(0, |e| e.len())
    }

    fn split(&self, text: &str, budget: usize) -> Vec<String> {
        let Ok(encoding) = self.0.encode_fast(text, false) else {
            return vec![text.to_owned()];
        };
        let offsets = encoding.get_offsets();
        let mut pieces = Vec::new();
        let mut start = 0;
        for token in (budget..offsets.len()).step_by(budget) {
            let cut = offsets[token].0;
            if cut > start && text.is_char_boundary(cut) {
                pieces.push(text[start..cut].to_owned());
                start = cut;
            }
        }
        pieces.push(text[start..].to_owned());
        pieces
    }
}

/// One window of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub text: String,
    /// Indices of the messages (turns) it holds, in the conversation.
    pub turns: RangeInclusive<usize>,
    pub cost: usize,
}

impl Window {
    pub fn messages(&self) -> usize {
        self.turns.end() - self.turns.start() + 1
    }
}

/// Packs rendered turns into windows costing at most `budget` each (except pieces of a
/// single turn that cannot be cut smaller).
pub fn windows(
    turns: &[String],
    separator: &str,
    budget: usize,
    measure: &dyn Measure,
) -> Vec<Window> {
    let separator_cost = if separator.is_empty() {
        0
    } else {
        measure.cost(separator)
    };
    let mut out = Vec::new();
    let mut current: Option<Window> = None;
    for (index, turn) in turns.iter().enumerate() {
        let cost = measure.cost(turn);
        let pieces = if cost > budget {
            measure
                .split(turn, budget)
                .into_iter()
                .map(|p| {
                    let c = measure.cost(&p);
                    (p, c)
                })
                .collect()
        } else {
            vec![(turn.clone(), cost)]
        };
        for (piece, cost) in pieces {
            if let Some(window) = &mut current {
                if window.cost + separator_cost + cost <= budget {
                    window.text.push_str(separator);
                    window.text.push_str(&piece);
                    window.cost += separator_cost + cost;
                    window.turns = *window.turns.start()..=index;
                    continue;
                }
                out.push(current.take().expect("checked above"));
            }
            current = Some(Window {
                text: piece,
                turns: index..=index,
                cost,
            });
        }
    }
    out.extend(current);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn turns(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn packs_whole_messages_greedily() {
        let w = windows(
            &turns(&["### A: hi", "### B: hello", "### A: bye"]),
            "",
            22,
            &Chars,
        );
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].text, "### A: hi### B: hello");
        assert_eq!(w[0].turns, 0..=1);
        assert_eq!(w[1].text, "### A: bye");
    }

    #[test]
    fn cuts_only_a_message_longer_than_the_window() {
        let long = format!("### A: {}", "word ".repeat(10));
        let w = windows(&turns(&["### B: x", &long, "### C: y"]), "", 20, &Chars);
        assert!(w.iter().all(|w| w.cost <= 20), "{w:?}");
        let joined: String = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(joined, format!("### B: x{long}### C: y"));
        assert_eq!(w[0].text, "### B: x");
    }

    #[test]
    fn separators_count_against_the_budget() {
        let w = windows(&turns(&["aaaa", "bbbb"]), "\n\n", 9, &Chars);
        assert_eq!(w.len(), 2);
        let w = windows(&turns(&["aaaa", "bbbb"]), "\n\n", 10, &Chars);
        assert_eq!(w[0].text, "aaaa\n\nbbbb");
    }

    proptest! {
        #[test]
        fn every_message_appears_exactly_once_and_windows_fit(
            texts in prop::collection::vec("[a-zé🔥 ]{0,40}", 1..30),
            budget in 8usize..60,
        ) {
            let turns = texts;
            let w = windows(&turns, "", budget, &Chars);
            let joined: String = w.iter().map(|w| w.text.as_str()).collect();
            prop_assert_eq!(joined, turns.concat());
            for window in &w {
                let single_long = window.turns.start() == window.turns.end()
                    && Chars.cost(&turns[*window.turns.start()]) > budget;
                prop_assert!(window.cost <= budget || single_long);
                prop_assert!(window.cost <= budget, "pieces of a long message fit too");
                prop_assert_eq!(window.cost, Chars.cost(&window.text));
            }
            // Turn ranges are ordered, contiguous and overlap only on a cut message.
            for pair in w.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                prop_assert!(b.turns.start() == a.turns.end() || *b.turns.start() == a.turns.end() + 1);
            }
        }
    }
}

//! Maps a key path in pipeline.toml to a line and column, for error messages.

use std::ops::Range;

use toml_edit::{Document, Item};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for LineCol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Line and column (1-based, column in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> LineCol {
    let offset = offset.min(source.len());
    let before = &source[..source.floor_char_boundary(offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    LineCol {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The span of the deepest key (or array element) along `path` that exists in the document;
/// the whole path when it exists, else its nearest existing ancestor.
pub(crate) fn locate(doc: &Document<&str>, path: &[&str]) -> Option<Range<usize>> {
    let mut item: &Item = doc.as_item();
    let mut best = None;
    for segment in path {
        if let Some(table) = item.as_table_like() {
            let Some((key, child)) = table.get_key_value(segment) else {
                break;
            };
            best = key.span().or(best);
            item = child;
        } else if let Some(array) = item.as_array() {
            let Some(element) = segment.parse().ok().and_then(|i: usize| array.get(i)) else {
                break;
            };
            // Elements are values, not items: the path ends at the element.
            return element.span().or(best);
        } else {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys() {
        let source = "[stages.a]\nuses = \"cmd\"\ninputs = { x = \"f\" }\nouts = [\"a\", \"b\"]\n";
        let doc = Document::parse(source).unwrap();
        let at = |path: &[&str]| line_col(source, locate(&doc, path).unwrap().start);
        assert_eq!(at(&["stages", "a", "uses"]), LineCol { line: 2, column: 1 });
        assert_eq!(
            at(&["stages", "a", "inputs", "x"]),
            LineCol {
                line: 3,
                column: 12
            }
        );
        assert_eq!(
            at(&["stages", "a", "outs", "1"]),
            LineCol {
                line: 4,
                column: 14
            }
        );
        assert_eq!(
            at(&["stages", "a", "missing"]),
            LineCol { line: 1, column: 9 }
        );
    }
}

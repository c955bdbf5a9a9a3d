//! Pieces shared by the dataset and model cards (the README.md of a repository).

use serde_json::Value;

/// At most this many rows of numbers in a card; reports can be long.
const MAX_ROWS: usize = 60;

/// A Markdown table of the numbers in a JSON report, keys flattened with dots
/// (`{"rows": {"train": 5}}` → `rows.train | 5`). Arrays show their length.
pub(crate) fn numbers_table(report: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", report, &mut rows);
    if rows.is_empty() {
        return String::new();
    }
    let mut table = String::from("| key | value |\n|---|---|\n");
    for (key, value) in rows.iter().take(MAX_ROWS) {
        table.push_str(&format!("| {} | {} |\n", escape(key), escape(value)));
    }
    if rows.len() > MAX_ROWS {
        table.push_str(&format!("| … | {} more |\n", rows.len() - MAX_ROWS));
    }
    table
}

fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    let shown = match value {
        Value::Object(map) => {
            for (key, child) in map {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, child, rows);
            }
            return;
        }
        Value::Array(items) => format!("{} items", items.len()),
        Value::Null => return,
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{}", (f * 1e4).round() / 1e4),
            _ => n.to_string(),
        },
        Value::Bool(b) => b.to_string(),
    };
    rows.push((prefix.to_owned(), shown));
}

/// Keeps a table cell on one line and its `|` from splitting the cell.
fn escape(cell: &str) -> String {
    cell.replace('|', "\\|").replace('\n', " ")
}

/// The body of a Markdown file without its YAML front matter.
pub(crate) fn strip_front_matter(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("---\n") else {
        return text;
    };
    match rest.find("\n---\n") {
        Some(end) => rest[end + 5..].trim_start_matches('\n'),
        None => text,
    }
}

/// A quoted YAML/Python string literal (both accept JSON's escapes for plain text).
pub(crate) fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flattens_nested_reports() {
        let table = numbers_table(&json!({
            "rows": {"train": 90, "test": 10},
            "ratio": 0.123456,
            "names": ["a", "b"],
            "note": "a|b",
        }));
        assert!(table.contains("| rows.train | 90 |"), "{table}");
        assert!(table.contains("| ratio | 0.1235 |"), "{table}");
        assert!(table.contains("| names | 2 items |"), "{table}");
        assert!(table.contains("| note | a\\|b |"), "{table}");
    }

    #[test]
    fn strips_front_matter_only_when_closed() {
        assert_eq!(strip_front_matter("---\na: 1\n---\n\n# Hi\n"), "# Hi\n");
        assert_eq!(strip_front_matter("# Hi\n"), "# Hi\n");
        assert_eq!(strip_front_matter("---\nno end"), "---\nno end");
    }
}

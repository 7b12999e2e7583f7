//! Readable tables for `tessera admin` (without `--json`): one row per item, chosen columns. Cells
//! are never cut: an id must paste back into the next command, and a secret shown once must be
//! shown whole. Scripts should use `--json`.

use serde_json::Value;

/// One cell's text: strings as they are, lists joined by spaces, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(cell).collect();
            if parts.is_empty() {
                "-".to_owned()
            } else {
                parts.join(" ")
            }
        }
        other => other.to_string(),
    }
}

/// Renders `items` (an array, or one object) with `columns` (JSON member names) as a table.
pub fn render(items: &Value, columns: &[&str]) -> String {
    let rows: Vec<&Value> = match items {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        one => vec![one],
    };
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|c| cell(&r[*c])).collect()).collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.len()))
        .collect();
    let mut out = String::new();
    let line = |values: Vec<&str>, out: &mut String| {
        let padded: Vec<String> =
            values.iter().zip(&widths).map(|(v, w)| format!("{v}{}", " ".repeat(w - v.chars().count()))).collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>().iter().map(String::as_str).collect(), &mut out);
    for r in &cells {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// Renders one object as `name  value` lines, every member.
pub fn record(item: &Value) -> String {
    let Value::Object(map) = item else {
        return format!("{}\n", cell(item));
    };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    map.iter().map(|(k, v)| format!("{k}{}  {}\n", " ".repeat(width - k.len()), cell(v))).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_aligns_columns_and_shows_lists_and_nulls() {
        let t = render(
            &json!([{"id": "a", "scopes": ["x", "y"], "expires_at": null}, {"id": "bbb", "scopes": [], "expires_at": "2026"}]),
            &["id", "scopes", "expires_at"],
        );
        assert_eq!(t, "ID   SCOPES  EXPIRES_AT\na    x y     -\nbbb  -       2026\n");
        assert_eq!(render(&json!([]), &["id"]), "(none)\n");
    }

    #[test]
    fn long_values_are_shown_whole() {
        let secret = "tsk_live_".to_owned() + &"x".repeat(60);
        assert!(render(&json!([{"kid": secret}]), &["kid"]).contains(&secret));
        assert!(record(&json!({"key": secret})).contains(&secret));
    }
}

//! The admin pages' tables: any list the admin services return, shown as JSON columns.

use maud::{html, Markup};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::pages::{csrf, layout, when, Frame};

/// A JSON value as table cell text: strings bare, lists space-separated, null as a dash.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => when(Some(t)),
            Err(_) => s.clone(),
        },
        serde_json::Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

/// Whether cell text is one short word, kept whole.
fn is_word(text: &str) -> bool {
    text.chars().count() <= 24 && !text.contains(char::is_whitespace)
}

/// A titled table of `rows` (JSON objects), one column per name in `cols`.
pub fn json_table(title: &str, cols: &[&str], rows: &[serde_json::Value]) -> Markup {
    html! {
        section {
            h2 { (title) " " span class="count" { "(" (rows.len()) ")" } }
            @if rows.is_empty() { p class="muted" { "Nothing here yet." } } @else {
                div class="table-wrap" { table {
                    thead { tr { @for c in cols { th scope="col" { (c.replace('_', " ")) } } } }
                    tbody { @for r in rows { tr { @for c in cols {
                        @let text = cell(&r[*c]);
                        // A short single word (a state, an algorithm) is never broken to make room
                        // for a long one (a kid, an id), which may still break anywhere.
                        td class=[is_word(&text).then_some("word")] { (text) }
                    } } } }
                } }
            }
        }
    }
}

/// An admin page: one table, and what else the page offers (a form, a second table).
pub fn admin_table(
    f: &Frame<'_>,
    title: &str,
    cols: &[&str],
    rows: &[serde_json::Value],
    extra: Option<Markup>,
) -> String {
    layout(
        f,
        title,
        html! {
            h1 { (title) }
            @if let Some(x) = extra { (x) }
            (json_table("All", cols, rows))
        },
    )
}

/// The signing keys' "Rotate" button.
pub fn rotate_signing_form(f: &Frame<'_>) -> Markup {
    html! {
        form method="post" action={(f.base) "/portal/admin/signing-keys/rotate"} class="panel" {
            (csrf(f))
            p { "Rotation activates the published next key and publishes a new one. It is refused while the next key is newer than the JWKS cache lifetime." }
            button type="submit" { "Rotate" }
        }
    }
}

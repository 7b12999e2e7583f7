//! How the portal shows times: UTC, to the second, the same on every page and chart.

use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// A time as `2026-11-30 10:04:15 UTC`, or a dash.
pub(super) fn when(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(|s| s.replace('T', " ").replace('Z', " UTC"))
        .unwrap_or_else(|| "—".into())
}

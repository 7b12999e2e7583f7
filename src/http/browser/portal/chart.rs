//! A key's usage charts: server-rendered SVG bars (no script, so nothing the CSP must allow).

use maud::{html, Markup};
use time::OffsetDateTime;

use super::format::when;
use crate::usage::report::Usage;

/// One bar of a usage chart: from `start`, the valid and the denied verifications.
pub struct Slot {
    /// Start of the hour or day.
    pub start: OffsetDateTime,
    /// Valid verifications.
    pub valid: i64,
    /// Denied verifications, every reason together.
    pub denied: i64,
}

/// Sums `usage`'s buckets into `count` slots of `step` from `start` (every slot present, empty or
/// not, so the bars line up with time).
pub fn slots(usage: &Usage, start: OffsetDateTime, step: time::Duration, count: usize) -> Vec<Slot> {
    let mut out: Vec<Slot> = (0..count).map(|i| Slot { start: start + step * i as u32, valid: 0, denied: 0 }).collect();
    for b in &usage.buckets {
        let offset = (b.start - start).whole_seconds();
        let step_s = step.whole_seconds().max(1);
        if offset < 0 {
            continue;
        }
        if let Some(slot) = out.get_mut((offset / step_s) as usize) {
            slot.valid += b.valid;
            slot.denied += b.denied.values().sum::<i64>();
        }
    }
    out
}

/// A usage chart as server-rendered SVG bars (no script): valid in the accent colour, denied
/// stacked in red above it; each bar has a tooltip.
pub(super) fn chart(title: &str, slots: &[Slot], usage: &Usage) -> Markup {
    let max = slots.iter().map(|b| b.valid + b.denied).max().unwrap_or(0).max(1);
    let n = slots.len().max(1);
    let w = 720.0_f64;
    let h = 160.0_f64;
    let bw = w / n as f64;
    let valid: i64 = slots.iter().map(|s| s.valid).sum();
    let denied: i64 = slots.iter().map(|s| s.denied).sum();
    html! {
        figure class="chart" {
            figcaption { (title) ": " strong { (valid) } " valid, " strong { (denied) } " denied"
                @for (code, n) in &usage.totals.denied { " · " (code) " " (n) } }
            svg viewBox={"0 0 " (w) " " (h)} role="img" aria-label={(title) ": " (valid) " valid, " (denied) " denied"}
                preserveAspectRatio="none" {
                @for (i, slot) in slots.iter().enumerate() {
                    @let vh = slot.valid as f64 / max as f64 * (h - 4.0);
                    @let dh = slot.denied as f64 / max as f64 * (h - 4.0);
                    @let x = i as f64 * bw + bw * 0.15;
                    @let bar = (bw * 0.7).max(1.0);
                    rect class="valid" x=(x) y=(h - vh) width=(bar) height=(vh) {
                        title { (when(Some(slot.start))) ": " (slot.valid) " valid" }
                    }
                    rect class="denied" x=(x) y=(h - vh - dh) width=(bar) height=(dh) {
                        title { (when(Some(slot.start))) ": " (slot.denied) " denied" }
                    }
                }
            }
            p class="legend" { span class="sw valid" {} "valid " span class="sw denied" {} "denied"
                " · " (when(slots.first().map(|s| s.start))) " to now" }
        }
    }
}

/// A key's usage, hourly over 24 hours and daily over 30 days.
pub struct KeyUsage {
    /// The last 24 hours.
    pub hourly: Usage,
    /// Its 24 hourly slots.
    pub hours: Vec<Slot>,
    /// The last 30 days (hour buckets).
    pub daily: Usage,
    /// Its 30 daily slots.
    pub days: Vec<Slot>,
}

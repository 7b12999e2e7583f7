//! Prometheus metrics: one process-wide recorder, named helpers for what Tessera counts.

use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
    time::Duration,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// A webhook attempt's outcome: `delivered`, `failed` (to be retried, or given up when
/// `abandoned`) or `gone` (410: the endpoint is disabled).
pub fn webhook_delivery(outcome: &'static str, abandoned: bool) {
    metrics::counter!("webhook_deliveries_total", "outcome" => outcome).increment(1);
    if abandoned {
        metrics::counter!("webhook_deliveries_abandoned_total").increment(1);
    }
}

/// Webhook deliveries waiting (to enabled endpoints), and the age of the oldest, seconds.
pub fn webhook_backlog(pending: i64, oldest_age_secs: f64) {
    metrics::gauge!("webhook_outbox_pending").set(pending as f64);
    metrics::gauge!("webhook_outbox_oldest_pending_age_seconds").set(oldest_age_secs);
}

/// Installs the recorder once per process (several test applications share it) and returns its handle.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("http_request_duration_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// How often recorded histogram samples are folded into buckets. The Prometheus recorder keeps
/// every sample until then (or until a scrape); without this, an instance nobody scrapes grew by
/// about 8 bytes per request for ever (measured: RSS +28 MiB over a 10 s JWKS run at ~150,000
/// req/s, and a benchmark peak of 170 MB instead of 150).
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`] until shutdown
/// (`install_recorder` does not start the exporter's own upkeep task). A task of its own, so a
/// slow database query elsewhere cannot hold it up.
pub async fn run_upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Handles of one route's request metrics, registered on first use.
#[derive(Default)]
struct RouteMetrics {
    /// `http_requests_total` per (method, status).
    counts: Vec<(Box<str>, u16, metrics::Counter)>,
    /// `http_request_duration_seconds` per method.
    durations: Vec<(Box<str>, metrics::Histogram)>,
}

impl RouteMetrics {
    fn find(&self, method: &str, status: u16) -> Option<(&metrics::Counter, &metrics::Histogram)> {
        let count = self.counts.iter().find(|(m, s, _)| &**m == method && *s == status).map(|(_, _, c)| c)?;
        let duration = self.durations.iter().find(|(m, _)| &**m == method).map(|(_, h)| h)?;
        Some((count, duration))
    }
}

/// Route → handles. Building a metric's labels and looking it up in the registry cost more than
/// some handlers (measured on JWKS), so each (route, method, status) is registered once and its
/// handles reused. Routes are the router's templates and unmatched requests share one entry, so
/// the map stays as small as the API.
static HTTP: OnceLock<RwLock<HashMap<Box<str>, RouteMetrics, foldhash::fast::RandomState>>> = OnceLock::new();

/// Counters of one metric with one label whose values are static strings, on request paths:
/// each value is registered once, then found by a scan of a few entries under a read lock (no
/// hashing, no label building, no handle clone).
struct HotCounters {
    name: &'static str,
    label: &'static str,
    handles: RwLock<Vec<(&'static str, metrics::Counter)>>,
}

impl HotCounters {
    const fn new(name: &'static str, label: &'static str) -> Self {
        Self { name, label, handles: RwLock::new(Vec::new()) }
    }

    fn increment(&self, value: &'static str) {
        let find =
            |h: &[(&'static str, metrics::Counter)]| h.iter().position(|(v, _)| std::ptr::eq(*v, value) || *v == value);
        if let Ok(handles) = self.handles.read() {
            if let Some(i) = find(&handles) {
                handles[i].1.increment(1);
                return;
            }
        }
        let counter = metrics::counter!(self.name, self.label => value);
        counter.increment(1);
        if let Ok(mut handles) = self.handles.write() {
            if find(&handles).is_none() {
                handles.push((value, counter));
            }
        }
    }
}

static TOKENS_ISSUED: HotCounters = HotCounters::new("tokens_issued_total", "grant");
static KEY_VERIFICATIONS: HotCounters = HotCounters::new("api_key_verifications_total", "result");
static KEY_CACHE: HotCounters = HotCounters::new("api_key_cache_lookups_total", "result");

/// Records one HTTP request.
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let map = HTTP.get_or_init(Default::default);
    if let Ok(routes) = map.read() {
        if let Some((count, duration)) = routes.get(route).and_then(|r| r.find(method, status)) {
            count.increment(1);
            duration.record(elapsed.as_secs_f64());
            return;
        }
    }
    let labels = [("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
    let count = metrics::counter!("http_requests_total", &labels);
    let duration = metrics::histogram!("http_request_duration_seconds", &labels[..2]);
    count.increment(1);
    duration.record(elapsed.as_secs_f64());
    if let Ok(mut routes) = map.write() {
        let entry = routes.entry(route.into()).or_default();
        if !entry.counts.iter().any(|(m, s, _)| &**m == method && *s == status) {
            entry.counts.push((method.into(), status, count));
        }
        if !entry.durations.iter().any(|(m, _)| &**m == method) {
            entry.durations.push((method.into(), duration));
        }
    }
}

/// Records the pool's state just before rendering.
pub fn db_pool(size: u32, idle: usize) {
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle as f64);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(size).max(idle as f64) - idle as f64);
}

/// An access token was issued.
pub fn token_issued(grant: &'static str) {
    TOKENS_ISSUED.increment(grant);
}

/// A refresh token was presented again after it was spent.
pub fn refresh_reuse() {
    metrics::counter!("refresh_token_reuse_total").increment(1);
}

/// A spent refresh token was retried within the grace and answered with its successor.
pub fn refresh_retry() {
    metrics::counter!("refresh_token_retries_total").increment(1);
}

/// A revocation was committed.
pub fn revocation(kind: &'static str) {
    metrics::counter!("revocations_total", "kind" => kind).increment(1);
}

/// Outbox events published by this instance's relay.
pub fn outbox_published(n: u64) {
    if n > 0 {
        metrics::counter!("outbox_published_total").increment(n);
    }
}

/// Outbox backlog: events not yet published and the age of the oldest.
pub fn outbox_lag(pending: i64, oldest_age_secs: f64) {
    metrics::gauge!("outbox_pending_events").set(pending as f64);
    metrics::gauge!("outbox_oldest_pending_age_seconds").set(oldest_age_secs);
}

/// Where this instance stands in the revocation log: the last `seq` it applied, the last one
/// sequenced in Postgres, and for how long (seconds, 0 when caught up) it has been behind. An alert
/// on `revocation_behind_seconds > 5` finds an instance that is missing revocations.
pub fn revocation_position(applied: i64, in_database: i64, behind_secs: f64) {
    metrics::gauge!("revocation_applied_seq").set(applied as f64);
    metrics::gauge!("revocation_database_seq").set(in_database as f64);
    metrics::gauge!("revocation_behind_seconds").set(behind_secs);
}

/// API keys imported by hash.
pub fn keys_imported(n: u64) {
    metrics::counter!("api_keys_imported_total").increment(n);
}

/// An API key verification and its result.
pub fn key_verification(result: &'static str) {
    KEY_VERIFICATIONS.increment(result);
}

/// API-key cache lookups.
pub fn key_cache(hit: bool) {
    KEY_CACHE.increment(if hit { "hit" } else { "miss" });
}

/// Whether API-key rate limits are counted in Redis across instances (1) or on this instance
/// alone (0: Redis unset or unreachable).
pub fn rate_limits_shared(shared: bool) {
    metrics::gauge!("api_key_rate_limits_shared").set(if shared { 1.0 } else { 0.0 });
}

/// An anomaly was raised.
pub fn anomaly(kind: &str) {
    metrics::counter!("anomalies_total", "kind" => kind.to_owned()).increment(1);
}

/// A credential check refused before hashing: its source had too many failed or in-flight checks.
pub fn guessing_refused() {
    metrics::counter!("credential_checks_refused_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_upkeep_task_runs_until_shutdown() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run_upkeep(handle, stop.clone()));
        tokio::time::sleep(UPKEEP_EVERY * 3).await;
        assert!(!task.is_finished());
        stop.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(1), task).await;
        assert!(matches!(stopped, Ok(Ok(()))), "the upkeep task must stop when shutdown is signalled");
    }
}

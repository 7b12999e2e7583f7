//! `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::state::AppState;

/// Operations routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

/// Liveness answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok` when the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Readiness answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ready", "postgres": "up", "redis": "up", "rate_limits": "shared"}))]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: &'static str,
    /// `up` or `down`.
    pub postgres: &'static str,
    /// `up`, `down` (events wait in Postgres) or `in_process` (no Redis configured).
    pub redis: &'static str,
    /// Where API-key rate limits are counted: `shared` (in Redis, across instances) or
    /// `per_instance` (Redis unset or unreachable: each instance counts alone).
    pub rate_limits: &'static str,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Postgres answers within a second; Redis state (and so where rate limits are counted) is reported
/// but does not make the instance unready.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Readiness), (status = 503, body = Readiness)
))]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let pg = tokio::time::timeout(Duration::from_secs(1), sqlx::query("SELECT 1").execute(&state.db)).await;
    let pg_up = matches!(pg, Ok(Ok(_)));
    let (redis, rate_limits) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(1), state.bus.ping()), state.apikeys.rate_limit_mode());
    let redis = redis.unwrap_or(crate::revocation::bus::BusStatus::Down);
    let body = Readiness {
        status: if pg_up { "ready" } else { "unavailable" },
        postgres: if pg_up { "up" } else { "down" },
        redis: redis.as_str(),
        rate_limits: rate_limits.as_str(),
    };
    let status = if pg_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain")
))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::metrics::db_pool(state.db.size(), state.db.num_idle());
    crate::metrics::rate_limits_shared(state.apikeys.rate_limit_mode_now() == crate::ratelimit::Mode::Shared);
    let body = state.metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

//! The HTTP surface: one router built from per-surface modules, the layers every request passes,
//! and the last-resort formatter that keeps every error in the contract's formats.

pub mod admin;
pub mod extract;
pub mod keys;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod revocations;
pub mod wellknown;

use std::time::{Duration, Instant};

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{header, HeaderName, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    error::{ApiError, OAuthError},
    state::AppState,
};

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(ops::routes())
        .merge(wellknown::routes())
        .merge(oauth::routes())
        .merge(admin::routes())
        .merge(keys::routes())
        .merge(revocations::routes())
}

/// The full application router with its layers.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let (routes, spec) = api_router().split_for_parts();
    let spec = openapi::finish(spec);
    let request_id = HeaderName::from_static("x-request-id");
    routes
        .merge(openapi::docs_routes(spec))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .with_state(state)
        // Router::layer boxes each layer's response back into axum's, so the order reads inside-out:
        // the first layer here is the innermost.
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(middleware::from_fn(normalize_errors))
        .layer(middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            // The path only: never headers, query strings or bodies, which may carry secrets.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("handler panicked").into_response()))
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let res = next.run(req).await;
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    crate::metrics::http_request(&method, &route, res.status().as_u16(), started.elapsed());
    res
}

/// Rewrites any error response that is not already JSON (router 404/405, body limit 413,
/// timeout 408, ...) into problem+json, or into RFC 6749 JSON under `/oauth`.
async fn normalize_errors(req: Request, next: Next) -> Response {
    let oauth = req.uri().path().starts_with("/oauth/");
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.starts_with("application/json") || ct.starts_with("application/problem+json"))
        .unwrap_or(false);
    if is_json {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut fixed = if oauth {
        OAuthError::from_status(status).into_response_with_status(status)
    } else {
        ApiError::from_status(status).into_response()
    };
    if let Some(allow) = allow {
        fixed.headers_mut().insert(header::ALLOW, allow);
    }
    fixed
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` to every response of a router.
pub async fn no_store(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

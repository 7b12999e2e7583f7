//! The HTTP surface: one router built from per-surface modules, the layers every request passes,
//! and the last-resort formatter that keeps every error in the contract's formats.

pub mod admin;
pub mod browser;
pub mod caller;
mod conn;
pub mod deadline;
pub mod edge;
pub mod extract;
pub mod keys;
pub mod lookups;
pub mod oauth;
pub mod oauth_error;
pub mod openapi;
pub mod ops;
pub mod problem;
mod request_id;
pub mod revocations;
pub mod routes;
pub mod server;
pub mod source;
pub mod state;
pub mod userinfo;
pub mod webhooks;
pub mod wellknown;

use std::time::Duration;

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::Response,
};
use utoipa_axum::router::OpenApiRouter;

use crate::http::state::AppState;

pub use edge::BODY_LIMIT;

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(ops::routes())
        .merge(wellknown::routes())
        .merge(oauth::routes())
        .merge(browser::routes())
        .merge(userinfo::routes())
        .merge(admin::routes())
        .merge(keys::routes())
        .merge(lookups::routes())
        .merge(revocations::routes())
        .merge(webhooks::routes())
}

/// The application as one service: the router inside the edge (see [`edge`]), which labels
/// each request's metrics with the documented route it falls under.
pub fn service(state: AppState, request_timeout: Duration) -> AppService {
    let body_timeout = state.config.connections.body_timeout;
    let issuer_path = wellknown::issuer_path(&state.config.issuer).to_owned();
    let (mut routes, spec) = api_router().split_for_parts();
    let spec = openapi::finish(spec);
    let mut templates: Vec<String> = spec.paths.paths.keys().cloned().chain(openapi::docs_templates()).collect();
    if !issuer_path.is_empty() {
        // RFC 8414 §3.1: the metadata of an issuer with a path, at a path known only now.
        let at = wellknown::metadata_path(&state.config.issuer);
        routes = routes.route(&at, axum::routing::get(wellknown::metadata_under_path));
        templates.push(at);
    }
    let table = routes::RouteTable::new(templates);
    let router = routes
        .merge(openapi::docs_routes(spec))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .method_not_allowed_fallback(|| async { StatusCode::METHOD_NOT_ALLOWED })
        .with_state(state);
    edge::Edge::new(router, request_timeout, table).with_body_timeout(body_timeout).with_path_prefix(&issuer_path)
}

/// The whole application as a service: cloned per request by the server, which costs an `Arc`
/// increment (no box, no allocation).
pub type AppService = edge::Edge<axum::Router>;

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` to every response of a router.
pub async fn no_store(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

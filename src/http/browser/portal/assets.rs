//! The portal's stylesheet and its one script, embedded in the binary (no CDN: the portal works
//! offline and under `default-src 'self'`).

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::http::state::AppState;

const CSS: &str = include_str!("static/portal.css");
const JS: &str = include_str!("static/portal.js");

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stylesheet)).routes(routes!(script))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

/// The portal's stylesheet.
#[utoipa::path(get, path = "/assets/portal.css", tag = "portal",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

/// The portal's script (the "Copy" button).
#[utoipa::path(get, path = "/assets/portal.js", tag = "portal",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript")))]
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

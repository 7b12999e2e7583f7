//! The browser endpoints: `/oauth/authorize` (Tessera's sign-in page), `/oauth/logout` and the
//! pages' stylesheet. Every response carries the contract's Content-Security-Policy,
//! `X-Frame-Options: DENY` and `no-store`; cookies are `HttpOnly`, `SameSite=Lax` and, unless the
//! issuer is a loopback `http` URL, `Secure` with a `__Host-` name.

mod authorize;
mod logout;
pub mod pages;
pub mod portal;

use axum::{
    body::Body,
    extract::Request,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::Error, http::state::AppState};

/// The policy of every HTML page. No `form-action`: Chrome applies it to the redirect that follows
/// the sign-in form's POST, which goes to the client's own origin.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Browser routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize::authorize_get, authorize::authorize_post))
        .routes(routes!(logout::logout_get, logout::logout_post))
        .merge(portal::page_routes())
        .layer(middleware::from_fn(page_headers))
        .routes(routes!(stylesheet))
        .merge(portal::asset_routes())
}

/// Adds the HTML pages' security headers (CSP, `X-Frame-Options: DENY`, `nosniff`, no referrer) to
/// every response of a router (the sign-in pages' and the API reference's).
pub async fn security_headers(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// The security headers, and `no-store`: the sign-in pages carry CSRF tokens, codes in redirects,
/// and session cookies, none of which any cache should keep.
async fn page_headers(req: Request<Body>, next: Next) -> Response {
    let mut res = security_headers(req, next).await;
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// The stylesheet of Tessera's pages.
#[utoipa::path(get, path = "/assets/tessera.css", tag = "sign-in",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        pages::CSS,
    )
        .into_response()
}

/// Cookie names: `__Host-` (Secure, Path=/, no Domain) unless cookies are not secure.
pub(super) struct CookieNames {
    secure: bool,
}

impl CookieNames {
    fn new(secure: bool) -> Self {
        Self { secure }
    }
    fn session(&self) -> &'static str {
        if self.secure {
            "__Host-tessera_session"
        } else {
            "tessera_session"
        }
    }
    fn csrf(&self) -> &'static str {
        if self.secure {
            "__Host-tessera_csrf"
        } else {
            "tessera_csrf"
        }
    }
    /// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
    fn set(&self, name: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
        HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{age}")).ok()
    }
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// An HTML response.
fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))], body).into_response()
}

/// A `303 See Other` to `location`.
fn see_other(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The page for a failure of the service itself (details logged, never shown).
fn failure_page(service: &str, e: &Error) -> Response {
    let status = match e {
        Error::Database(_) | Error::Unavailable(_) | Error::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::error!(error = %e, "sign-in page failed");
    html(
        status,
        pages::error(service, "Something went wrong", "The sign-in service could not complete your request just now."),
    )
}

/// Parses a query string or form body into its parameters (the first of repeated names wins).
fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(raw).unwrap_or_default()
}

fn param(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty())
}

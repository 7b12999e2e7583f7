//! The developer portal's HTTP side: `/portal` and its pages. Sign-in goes through
//! `/oauth/authorize` as the public client `tessera-portal` with PKCE; the session is a random
//! `HttpOnly` cookie whose hash the `portal` service keeps (a backend for the frontend: the tokens
//! stay on the server). Every POST carries the session's CSRF token.

mod admin;
mod admin_pages;
mod assets;
mod chart;
mod format;
mod keys;
pub mod pages;

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{cookie, html, param, parse_pairs, see_other};
use crate::{
    error::Error,
    http::{source::SourceIp, state::AppState},
    portal::PortalUser,
};

/// The portal's pages (they get the page headers of [`super::routes`]).
pub(super) fn page_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(callback))
        .routes(routes!(sign_out))
        .routes(routes!(signed_out))
        .merge(keys::routes())
        .merge(admin::routes())
}

/// The portal's static assets (cacheable).
pub(super) fn asset_routes() -> OpenApiRouter<AppState> {
    assets::routes()
}

/// Cookie names: `__Host-` (Secure, Path=/) unless the issuer is a loopback `http` URL.
fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-tessera_portal"
    } else {
        "tessera_portal"
    }
}

fn login_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-tessera_portal_login"
    } else {
        "tessera_portal_login"
    }
}

fn set_cookie(secure: bool, name: &str, value: &str, max_age: Option<u64>) -> Option<HeaderValue> {
    super::CookieNames::new(secure).set(name, value, max_age)
}

/// A signed-in request: the user, the session cookie and its CSRF token.
pub(super) struct Signed {
    user: PortalUser,
    cookie: String,
    csrf: String,
    base: String,
}

impl Signed {
    fn frame<'a>(&'a self, state: &'a AppState) -> pages::Frame<'a> {
        pages::Frame { service: state.portal.service_name(), base: &self.base, user: &self.user, csrf: &self.csrf }
    }
}

/// The signed-in session of the request, or the response to send instead: `/portal` to sign in
/// again, or a failure page.
async fn signed(state: &AppState, headers: &HeaderMap) -> Result<Signed, Response> {
    let secure = state.portal.secure_cookies();
    let base = state.portal.base_path();
    let Some(c) = cookie(headers, session_cookie(secure)) else {
        return Err(see_other(&format!("{base}/portal")));
    };
    match state.portal.session(c).await {
        Ok(Some(user)) => Ok(Signed { user, cookie: c.to_owned(), csrf: state.portal.csrf_token(c), base }),
        Ok(None) => Err(see_other(&format!("{base}/portal"))),
        Err(e) => Err(super::failure_page(state.portal.service_name(), &e)),
    }
}

/// As [`signed`], when the page needs `scope` (403 without it, as `/v1` would answer).
async fn signed_with(state: &AppState, headers: &HeaderMap, scope: &str) -> Result<Signed, Response> {
    let s = signed(state, headers).await?;
    if !s.user.has(scope) {
        let detail = format!("Your account does not have the {scope} scope this page needs. Ask an administrator.");
        return Err(html(StatusCode::FORBIDDEN, pages::message(&s.frame(state), "Not allowed", &detail)));
    }
    Ok(s)
}

/// As [`signed_with`] `keys:write`, for a form post: also checks its `csrf_token` (403 without
/// the right one).
async fn signed_post(state: &AppState, headers: &HeaderMap, pairs: &[(String, String)]) -> Result<Signed, Response> {
    signed_post_with(state, headers, pairs, "keys:write").await
}

/// As [`signed_post`], for a form that needs `scope` (empty: none beyond a session).
async fn signed_post_with(
    state: &AppState,
    headers: &HeaderMap,
    pairs: &[(String, String)],
    scope: &str,
) -> Result<Signed, Response> {
    let s = signed(state, headers).await?;
    let token = param(pairs, "csrf_token").unwrap_or_default();
    if !state.portal.csrf_ok(&s.cookie, &token) {
        let page = pages::message(
            &s.frame(state),
            "Request refused",
            "This form has expired or did not come from the portal. Reload the page and try again.",
        );
        return Err(html(StatusCode::FORBIDDEN, page));
    }
    if !scope.is_empty() && !s.user.has(scope) {
        let detail = format!("Your account does not have the {scope} scope this needs. Ask an administrator.");
        return Err(html(StatusCode::FORBIDDEN, pages::message(&s.frame(state), "Not allowed", &detail)));
    }
    Ok(s)
}

/// The page for a domain error, with the status the API would answer.
fn error_page(state: &AppState, s: &Signed, e: &Error) -> Response {
    let status = match e {
        Error::Invalid(_) | Error::ScopeReserved(_) | Error::LimitExceeded(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Forbidden(_) | Error::ScopeNotAllowed(_) => StatusCode::FORBIDDEN,
        Error::Conflict(_) | Error::KeyRevoked | Error::NextKeyTooNew { .. } => StatusCode::CONFLICT,
        _ => return super::failure_page(state.portal.service_name(), e),
    };
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        _ => "That did not work",
    };
    html(status, pages::message(&s.frame(state), heading, &e.to_string()))
}

/// The portal: the key table when signed in; else a 303 to `/oauth/authorize` (PKCE S256, a
/// fresh `state`), with the verifier kept in a short-lived `HttpOnly` login cookie.
#[utoipa::path(get, path = "/portal", tag = "portal",
    responses(
        (status = 200, description = "The key table", content_type = "text/html"),
        (status = 303, description = "To the sign-in page", headers(("Location" = String)))
    ))]
async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let secure = state.portal.secure_cookies();
    if cookie(&headers, session_cookie(secure)).is_some() {
        match signed(&state, &headers).await {
            Ok(s) => return keys::table(&state, &s, None).await,
            Err(res) if res.status() != StatusCode::SEE_OTHER => return res,
            Err(_) => {}
        }
    }
    let login = state.portal.begin();
    let mut res = see_other(&login.authorize_url);
    if let Some(v) = set_cookie(secure, login_cookie(secure), &login.cookie, Some(600)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The redirect URI: redeems the code on the server and starts the portal session.
#[utoipa::path(get, path = "/portal/callback", tag = "portal",
    params(("code" = Option<String>, Query), ("state" = Option<String>, Query), ("error" = Option<String>, Query)),
    responses((status = 303, description = "To the portal (signed in, or to sign in again)", headers(("Location" = String))),
        (status = 400, description = "The sign-in did not complete (an error from the sign-in page, or no code): an HTML page saying so")))]
async fn callback(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let secure = state.portal.secure_cookies();
    let base = state.portal.base_path();
    let pairs = parse_pairs(query.as_deref().unwrap_or("").as_bytes());
    let (Some(code), Some(st)) = (param(&pairs, "code"), param(&pairs, "state")) else {
        let page = super::pages::error(
            state.portal.service_name(),
            "Sign-in did not complete",
            "The sign-in page sent you back without a sign-in. Open the portal again to retry.",
        );
        return html(StatusCode::BAD_REQUEST, page);
    };
    let login = cookie(&headers, login_cookie(secure));
    let session = match state.portal.complete(login, &code, &st, source.0).await {
        Ok(s) => s,
        Err(e) => return super::failure_page(state.portal.service_name(), &e),
    };
    let mut res = match session {
        Some(_) => see_other(&format!("{base}/portal")),
        None => html(
            StatusCode::BAD_REQUEST,
            super::pages::error(
                state.portal.service_name(),
                "Sign-in did not complete",
                "This sign-in has expired or was started in another window. Open the portal again to retry.",
            ),
        ),
    };
    let h = res.headers_mut();
    if let Some(v) = set_cookie(secure, login_cookie(secure), "", Some(0)) {
        h.append(header::SET_COOKIE, v);
    }
    if let Some(v) = session.and_then(|c| set_cookie(secure, session_cookie(secure), &c, None)) {
        h.append(header::SET_COOKIE, v);
    }
    res
}

/// "Sign out": ends the portal session (and its refresh family), then ends the sign-in session
/// through `/oauth/logout`, which comes back to the signed-out page.
#[utoipa::path(post, path = "/portal/sign-out", tag = "portal",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`csrf_token`"),
    responses(
        (status = 303, description = "Through /oauth/logout", headers(("Location" = String))),
        (status = 403, description = "Missing or wrong CSRF token", content_type = "text/html")
    ))]
async fn sign_out(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let secure = state.portal.secure_cookies();
    let pairs = parse_pairs(&body);
    let s = match signed_post_with(&state, &headers, &pairs, "").await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let location = match state.portal.end(Some(&s.cookie)).await {
        Ok(l) => l,
        Err(e) => return super::failure_page(state.portal.service_name(), &e),
    };
    let mut res = see_other(&location);
    if let Some(v) = set_cookie(secure, session_cookie(secure), "", Some(0)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// Where `/oauth/logout` sends the browser after "Sign out".
#[utoipa::path(get, path = "/portal/signed-out", tag = "portal",
    responses((status = 200, description = "Signed out", content_type = "text/html")))]
async fn signed_out(State(state): State<AppState>) -> Response {
    html(StatusCode::OK, pages::signed_out(state.portal.service_name(), &state.portal.base_path()))
}

/// A response with `body` as HTML and `no-store` (secrets shown once).
fn secret_page(body: String) -> Response {
    let mut res = html(StatusCode::OK, body);
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.into_response()
}

//! `GET` and `POST /oauth/authorize`: extract, call [`crate::signin::SignIn`], render.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::Response,
};

use super::{cookie, failure_page, html, pages, param, parse_pairs, see_other, CookieNames};
use crate::{
    http::{source::SourceIp, state::AppState},
    signin::{AuthorizeParams, Failure, FormError, Step, Submission},
};

/// The authorization request's parameters (the form's own fields are not among them).
const NAMES: [&str; 10] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "prompt",
    "max_age",
];

fn params(pairs: &[(String, String)]) -> AuthorizeParams {
    let repeated =
        NAMES.iter().filter(|n| pairs.iter().filter(|(k, _)| k == *n).count() > 1).map(|n| (*n).to_owned()).collect();
    AuthorizeParams {
        repeated,
        request_object: param(pairs, "request").is_some(),
        request_uri: param(pairs, "request_uri").is_some(),
        response_type: param(pairs, "response_type"),
        client_id: param(pairs, "client_id"),
        redirect_uri: param(pairs, "redirect_uri"),
        scope: param(pairs, "scope"),
        state: param(pairs, "state"),
        code_challenge: param(pairs, "code_challenge"),
        code_challenge_method: param(pairs, "code_challenge_method"),
        nonce: param(pairs, "nonce"),
        prompt: param(pairs, "prompt"),
        max_age: param(pairs, "max_age"),
    }
}

/// Tessera's sign-in page (RFC 6749 §4.1.1 with PKCE, OpenID Connect `prompt` and `max_age`).
///
/// 200 with the sign-in form; 303 to the client's redirect URI with `code`, `state` and `iss` when
/// the browser's sign-in session satisfies the request, or with `error`, `state` and `iss` for a
/// bad request (`prompt=none` without a session: `login_required`); 400 with an error page — and
/// never a redirect — for an unknown client or an unregistered `redirect_uri`.
#[utoipa::path(get, path = "/oauth/authorize", tag = "sign-in",
    params(
        ("response_type" = String, Query, description = "`code`"),
        ("client_id" = String, Query),
        ("redirect_uri" = String, Query, description = "Registered for the client (loopback IPs on any port)"),
        ("code_challenge" = String, Query, description = "base64url(SHA-256(code_verifier))"),
        ("code_challenge_method" = String, Query, description = "`S256`"),
        ("state" = Option<String>, Query),
        ("scope" = Option<String>, Query),
        ("nonce" = Option<String>, Query),
        ("prompt" = Option<String>, Query, description = "`none` or `login`"),
        ("max_age" = Option<i64>, Query, description = "seconds")
    ),
    responses(
        (status = 200, description = "The sign-in page", content_type = "text/html"),
        (status = 303, description = "Back to the client", headers(("Location" = String))),
        (status = 400, description = "Unknown client or unregistered redirect URI", content_type = "text/html")
    ))]
pub(super) async fn authorize_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = parse_pairs(query.as_deref().unwrap_or("").as_bytes());
    let names = CookieNames::new(state.signin.secure_cookies());
    let session = cookie(&headers, names.session());
    let step = state.signin.authorize(params(&pairs), session).await;
    respond(&state, &names, &headers, step)
}

/// The sign-in form's submission: CSRF token, username and password, and the authorization
/// request in hidden fields. 303 to the client with a code (and a session cookie) on success; the
/// page again, with the reason, otherwise. Throttled and locked out like the password grant.
#[utoipa::path(post, path = "/oauth/authorize", tag = "sign-in",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`csrf_token`, `username`, `password` and the authorization request's parameters"),
    responses(
        (status = 303, description = "Back to the client", headers(("Location" = String))),
        (status = 400, description = "Wrong credentials, or unknown client / unregistered redirect URI", content_type = "text/html"),
        (status = 403, description = "Missing or wrong CSRF token", content_type = "text/html"),
        (status = 429, description = "Too many attempts from this address", content_type = "text/html"),
        (status = 503, description = "Busy", content_type = "text/html")
    ))]
pub(super) async fn authorize_post(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = parse_pairs(&body);
    let names = CookieNames::new(state.signin.secure_cookies());
    let csrf_cookie = cookie(&headers, names.csrf());
    let token = param(&pairs, "csrf_token");
    let username = param(&pairs, "username").unwrap_or_default();
    let password = param(&pairs, "password").unwrap_or_default();
    let form = Submission {
        csrf_cookie,
        csrf_token: token.as_deref(),
        session_cookie: cookie(&headers, names.session()),
        username: &username,
        password: &password,
    };
    let step = state.signin.sign_in(params(&pairs), &form, source.0).await;
    respond(&state, &names, &headers, step)
}

fn respond(state: &AppState, names: &CookieNames, headers: &HeaderMap, step: Result<Step, Failure>) -> Response {
    let service = state.signin.service_name();
    match step {
        Ok(Step::Redirect { location, session }) => {
            let mut res = see_other(&location);
            if let Some(new) = session {
                if let Some(v) = names.set(names.session(), &new.cookie, Some(new.max_age)) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            res
        }
        Ok(Step::Form(form)) => {
            // The CSRF cookie this browser already has, or a new one.
            let existing = cookie(headers, names.csrf()).filter(|c| !c.is_empty() && c.len() <= 128);
            let csrf_cookie = existing.map_or_else(|| state.signin.new_csrf_cookie(), str::to_owned);
            let status = match form.error {
                None => StatusCode::OK,
                Some(FormError::WrongCredentials | FormError::Missing) => StatusCode::BAD_REQUEST,
                Some(FormError::Expired) => StatusCode::FORBIDDEN,
                Some(FormError::TooManyAttempts(_)) => StatusCode::TOO_MANY_REQUESTS,
                Some(FormError::Busy(_)) => StatusCode::SERVICE_UNAVAILABLE,
            };
            let mut res = html(status, pages::sign_in(service, &form, &state.signin.csrf_token(&csrf_cookie)));
            if existing.is_none() {
                if let Some(v) = names.set(names.csrf(), &csrf_cookie, None) {
                    res.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            if let Some(FormError::TooManyAttempts(s) | FormError::Busy(s)) = form.error {
                res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
            }
            res
        }
        Err(Failure::Page(detail)) => {
            html(StatusCode::BAD_REQUEST, pages::error(service, "Sign-in request refused", &detail))
        }
        Err(Failure::Failed(e)) => failure_page(service, &e),
    }
}

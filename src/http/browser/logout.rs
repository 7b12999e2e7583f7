//! `GET` and `POST /oauth/logout` (OpenID RP-Initiated Logout 1.0).

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::Response,
};

use super::{cookie, failure_page, html, pages, param, parse_pairs, see_other, CookieNames};
use crate::{
    http::state::AppState,
    signin::{LoggedOut, LogoutParams},
};

fn params(pairs: &[(String, String)]) -> LogoutParams {
    LogoutParams {
        id_token_hint: param(pairs, "id_token_hint"),
        client_id: param(pairs, "client_id"),
        post_logout_redirect_uri: param(pairs, "post_logout_redirect_uri"),
        state: param(pairs, "state"),
    }
}

/// Ends the browser's sign-in session; 303 to `post_logout_redirect_uri` (with `state`) when it is
/// registered for the client that `id_token_hint` or `client_id` names, else the signed-out page.
#[utoipa::path(get, path = "/oauth/logout", tag = "sign-in",
    params(
        ("id_token_hint" = Option<String>, Query),
        ("client_id" = Option<String>, Query),
        ("post_logout_redirect_uri" = Option<String>, Query),
        ("state" = Option<String>, Query)
    ),
    responses(
        (status = 200, description = "Signed out", content_type = "text/html"),
        (status = 303, description = "To the registered post-logout redirect URI", headers(("Location" = String)))
    ))]
pub(super) async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = parse_pairs(query.as_deref().unwrap_or("").as_bytes());
    logout(&state, &headers, &params(&pairs)).await
}

/// As `GET`, with the parameters in a form body.
#[utoipa::path(post, path = "/oauth/logout", tag = "sign-in",
    request_body(content_type = "application/x-www-form-urlencoded",
        description = "`id_token_hint`, `client_id`, `post_logout_redirect_uri`, `state`"),
    responses(
        (status = 200, description = "Signed out", content_type = "text/html"),
        (status = 303, description = "To the registered post-logout redirect URI", headers(("Location" = String)))
    ))]
pub(super) async fn logout_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    logout(&state, &headers, &params(&parse_pairs(&body))).await
}

async fn logout(state: &AppState, headers: &HeaderMap, params: &LogoutParams) -> Response {
    let names = CookieNames::new(state.signin.secure_cookies());
    let service = state.signin.service_name();
    let mut res = match state.signin.logout(cookie(headers, names.session()), params).await {
        Ok(LoggedOut::Redirect(location)) => see_other(&location),
        Ok(LoggedOut::Page { redirect_refused }) => html(StatusCode::OK, pages::signed_out(service, redirect_refused)),
        Err(e) => return failure_page(service, &e),
    };
    if let Some(v) = names.set(names.session(), "", Some(0)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

//! `GET`/`POST /oauth/userinfo` (OpenID Connect Core §5.3): the signed-in user's claims for an
//! access token with scope `openid`. Errors follow RFC 6750 §3.1 (`WWW-Authenticate`).

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    Json,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::state::AppState,
    signin::{UserInfo, UserinfoError},
};

/// UserInfo routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(userinfo_get, userinfo_post)).layer(middleware::from_fn(super::no_store))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// The user the access token is about.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "sign-in", security(("bearer" = [])),
    responses(
        (status = 200, body = UserInfo),
        (status = 401, description = "Missing or invalid token", headers(("WWW-Authenticate" = String))),
        (status = 403, description = "The token lacks scope openid", headers(("WWW-Authenticate" = String)))
    ))]
async fn userinfo_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(state.signin.userinfo(bearer(&headers)).await)
}

/// As `GET`; the token may also come as the form parameter `access_token` (RFC 6750 §2.2).
#[utoipa::path(post, path = "/oauth/userinfo", tag = "sign-in", security(("bearer" = [])),
    request_body(content_type = "application/x-www-form-urlencoded", description = "optional `access_token`"),
    responses(
        (status = 200, body = UserInfo),
        (status = 401, description = "Missing or invalid token", headers(("WWW-Authenticate" = String))),
        (status = 403, description = "The token lacks scope openid", headers(("WWW-Authenticate" = String)))
    ))]
async fn userinfo_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let from_form = form.into_iter().find(|(k, _)| k == "access_token").map(|(_, v)| v);
    let token = bearer(&headers).map(str::to_owned).or(from_form);
    answer(state.signin.userinfo(token.as_deref()).await)
}

fn answer(result: Result<UserInfo, UserinfoError>) -> Response {
    let (status, challenge, error) = match result {
        Ok(info) => return Json(info).into_response(),
        Err(UserinfoError::InvalidToken) => {
            (StatusCode::UNAUTHORIZED, r#"Bearer error="invalid_token""#, "invalid_token")
        }
        Err(UserinfoError::InsufficientScope) => {
            (StatusCode::FORBIDDEN, r#"Bearer error="insufficient_scope", scope="openid""#, "insufficient_scope")
        }
        Err(UserinfoError::Failed(e)) => {
            tracing::error!(error = %e, "userinfo failed");
            (StatusCode::SERVICE_UNAVAILABLE, r#"Bearer error="temporarily_unavailable""#, "temporarily_unavailable")
        }
    };
    let body = serde_json::json!({"error": error, "error_description": match error {
        "invalid_token" => "the access token is missing, invalid, expired or revoked",
        "insufficient_scope" => "the access token lacks scope openid",
        _ => "the service is temporarily unavailable, try again",
    }});
    (status, [(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge))], Json(body)).into_response()
}

//! The portal's key pages: the table, create, edit, rotate (with a grace), disable and enable,
//! revoke (after a confirmation page), and one key's usage, anomalies and audit trail. Every
//! change goes through the same `apikeys` service calls as `/v1/keys`, as the signed-in user.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde_json::{json, Value};
use time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{error_page, pages, secret_page, signed_post, signed_with, Signed};
use crate::{
    apikeys::{manage::Requester, ApiKeyView, KeyPatch, NewKey, RevokeKey, RotateKey},
    audit::AuditQuery,
    error::Error,
    http::{
        browser::{html, param, parse_pairs, see_other},
        source::SourceIp,
        state::AppState,
    },
    usage::AnomalyQuery,
};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(key_page))
        .routes(routes!(edit))
        .routes(routes!(rotate))
        .routes(routes!(disable))
        .routes(routes!(enable))
        .routes(routes!(confirm_revoke, revoke))
}

fn who(s: &Signed) -> (String, bool) {
    (s.user.user_id.to_string(), s.user.admin)
}

/// Scopes typed into a text field: separated by spaces or commas.
fn scope_list(raw: Option<String>) -> Vec<String> {
    raw.unwrap_or_default().split([' ', ',', '\n', '\t']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn from_form<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::Invalid(e.to_string()))
}

/// The key table (the portal's home page).
pub(super) async fn table(state: &AppState, s: &Signed, notice: Option<&str>) -> Response {
    if !s.user.has("keys:read") {
        let detail = "Your account does not have the keys:read scope the key list needs. Ask an administrator.";
        return html(StatusCode::FORBIDDEN, pages::message(&s.frame(state), "Not allowed", detail));
    }
    let (sub, _) = who(s);
    // Always the user's own keys, admin or not: other owners' keys are the admin pages' business.
    match state.apikeys.list(Requester { sub: &sub, admin: false }, None, None).await {
        Ok(keys) => html(StatusCode::OK, pages::keys(&s.frame(state), &keys, notice)),
        Err(e) => error_page(state, s, &e),
    }
}

/// A form posted about key `id`: its fields, the signed-in session (CSRF checked, scope
/// `keys:write`) and the key, which must be the caller's (or any, for an admin).
async fn key_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    id: &str,
) -> Result<(Vec<(String, String)>, Signed, ApiKeyView), Response> {
    let pairs = parse_pairs(body);
    let s = signed_post(state, headers, &pairs).await?;
    let key = own_key(state, &s, id).await?;
    Ok((pairs, s, key))
}

async fn own_key(state: &AppState, s: &Signed, id: &str) -> Result<ApiKeyView, Response> {
    let (sub, admin) = who(s);
    let Ok(id) = Uuid::parse_str(id) else {
        return Err(error_page(state, s, &Error::NotFound("API key")));
    };
    state.apikeys.get(Requester { sub: &sub, admin }, id).await.map_err(|e| error_page(state, s, &e))
}

/// Creates a key and shows its secret once.
#[utoipa::path(post, path = "/portal/keys", tag = "portal",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`name`, `scopes`, `environment`, `csrf_token`"),
    responses((status = 200, description = "The new key, shown once", content_type = "text/html"),
        (status = 403, description = "Missing or wrong CSRF token")))]
async fn create(State(state): State<AppState>, source: SourceIp, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = parse_pairs(&body);
    let s = match signed_post(&state, &headers, &pairs).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let new: Result<NewKey, Error> = from_form(json!({
        "name": param(&pairs, "name").unwrap_or_default(),
        "scopes": scope_list(param(&pairs, "scopes")),
        "environment": param(&pairs, "environment").unwrap_or_else(|| "live".into()),
    }));
    let (sub, _) = who(&s);
    let created = match new {
        Ok(new) => state.apikeys.create(&sub, new, &s.user.actor(source.0)).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(c) => secret_page(pages::secret(&s.frame(&state), c.key.expose(), &c.view, false)),
        Err(e) => error_page(&state, &s, &e),
    }
}

/// One key: its details and controls, usage over the last 24 hours, anomalies and audit trail.
#[utoipa::path(get, path = "/portal/keys/{id}", tag = "portal", params(("id" = String, Path)),
    responses((status = 200, description = "The key's page", content_type = "text/html"),
        (status = 404, description = "No such key of this user")))]
async fn key_page(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = match signed_with(&state, &headers, "keys:read").await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let key = match own_key(&state, &s, &id).await {
        Ok(k) => k,
        Err(res) => return res,
    };
    let usage = usage(&state, key.id).await;
    let anomalies = state
        .usage
        .anomalies(&AnomalyQuery { since: None, after: None, kind: None, key: Some(key.id), limit: 1000 })
        .await;
    let audit = state
        .audit
        .list(&AuditQuery {
            since: None,
            actor: None,
            target_id: Some(key.id.to_string()),
            target_type: None,
            after: None,
            limit: 100,
        })
        .await;
    match (usage, anomalies, audit) {
        (Ok(u), Ok(a), Ok(au)) => html(StatusCode::OK, pages::key(&s.frame(&state), &key, &u, &a, &au)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => error_page(&state, &s, &e),
    }
}

/// The key's usage: hourly for the last 24 hours, and daily for 30 days, in UTC hours and days.
async fn usage(state: &AppState, id: Uuid) -> Result<super::chart::KeyUsage, Error> {
    use crate::usage::report::Granularity;
    let now = state.portal.now();
    let hour =
        now.replace_nanosecond(0).and_then(|t| t.replace_second(0)).and_then(|t| t.replace_minute(0)).unwrap_or(now);
    let hours_from = hour - Duration::hours(23);
    let day = hour.replace_hour(0).unwrap_or(hour);
    let days_from = day - Duration::days(29);
    let hourly = state.usage.report(id, Some(hours_from), None, Granularity::Hour).await?;
    let daily = state.usage.report(id, Some(days_from), None, Granularity::Day).await?;
    Ok(super::chart::KeyUsage {
        hours: super::chart::slots(&hourly, hours_from, Duration::HOUR, 24),
        days: super::chart::slots(&daily, days_from, Duration::DAY, 30),
        hourly,
        daily,
    })
}

async fn patch(
    state: &AppState,
    source: SourceIp,
    headers: &HeaderMap,
    body: &Bytes,
    id: &str,
    patch: Value,
) -> Response {
    let (pairs, s, key) = match key_form(state, headers, body, id).await {
        Ok(found) => found,
        Err(res) => return res,
    };
    let patch = if patch.is_null() {
        json!({"name": param(&pairs, "name").unwrap_or_default(), "scopes": scope_list(param(&pairs, "scopes"))})
    } else {
        patch
    };
    let (sub, admin) = who(&s);
    let result = match from_form::<KeyPatch>(patch) {
        Ok(p) => state.apikeys.update(Requester { sub: &sub, admin }, key.id, p, &s.user.actor(source.0)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(k) => see_other(&format!("{}/portal/keys/{}", s.base, k.id)),
        Err(e) => error_page(state, &s, &e),
    }
}

/// Renames the key or changes its scopes.
#[utoipa::path(post, path = "/portal/keys/{id}/edit", tag = "portal", params(("id" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", description = "`name`, `scopes`, `csrf_token`"),
    responses((status = 303, description = "Back to the key's page")))]
async fn edit(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch(&state, source, &headers, &body, &id, Value::Null).await
}

/// Disables the key (it verifies as `DISABLED` until enabled).
#[utoipa::path(post, path = "/portal/keys/{id}/disable", tag = "portal", params(("id" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", description = "`csrf_token`"),
    responses((status = 303, description = "Back to the key's page")))]
async fn disable(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch(&state, source, &headers, &body, &id, json!({"enabled": false})).await
}

/// Enables a disabled key.
#[utoipa::path(post, path = "/portal/keys/{id}/enable", tag = "portal", params(("id" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", description = "`csrf_token`"),
    responses((status = 303, description = "Back to the key's page")))]
async fn enable(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    patch(&state, source, &headers, &body, &id, json!({"enabled": true})).await
}

/// Rotates the key; the old one stays valid for the chosen grace. Shows the new secret once.
#[utoipa::path(post, path = "/portal/keys/{id}/rotate", tag = "portal", params(("id" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", description = "`grace_period` (0, 3600, 86400 or 604800), `csrf_token`"),
    responses((status = 200, description = "The new key, shown once", content_type = "text/html")))]
async fn rotate(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (pairs, s, key) = match key_form(&state, &headers, &body, &id).await {
        Ok(found) => found,
        Err(res) => return res,
    };
    let grace = match param(&pairs, "grace_period").as_deref() {
        Some("0") => 0,
        Some("3600") => 3_600,
        None | Some("86400") => 86_400,
        Some("604800") => 604_800,
        Some(_) => return error_page(&state, &s, &Error::Invalid("grace_period: choose now, 1 h, 24 h or 7 d".into())),
    };
    let (sub, admin) = who(&s);
    let body = RotateKey { grace_period: Some(grace) };
    match state.apikeys.rotate(Requester { sub: &sub, admin }, key.id, body, &s.user.actor(source.0)).await {
        Ok(c) => secret_page(pages::secret(&s.frame(&state), c.key.expose(), &c.view, true)),
        Err(e) => error_page(&state, &s, &e),
    }
}

/// The confirmation step before a revocation.
#[utoipa::path(get, path = "/portal/keys/{id}/revoke", tag = "portal", params(("id" = String, Path)),
    responses((status = 200, description = "Confirm the revocation", content_type = "text/html")))]
async fn confirm_revoke(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let s = match signed_with(&state, &headers, "keys:read").await {
        Ok(s) => s,
        Err(res) => return res,
    };
    match own_key(&state, &s, &id).await {
        Ok(k) => html(StatusCode::OK, pages::confirm_revoke(&s.frame(&state), &k)),
        Err(res) => res,
    }
}

/// Revokes the key, for good.
#[utoipa::path(post, path = "/portal/keys/{id}/revoke", tag = "portal", params(("id" = String, Path)),
    request_body(content_type = "application/x-www-form-urlencoded", description = "`reason`, `csrf_token`"),
    responses((status = 200, description = "The key table, saying so", content_type = "text/html")))]
async fn revoke(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (pairs, s, key) = match key_form(&state, &headers, &body, &id).await {
        Ok(found) => found,
        Err(res) => return res,
    };
    let (sub, admin) = who(&s);
    let body = RevokeKey { reason: param(&pairs, "reason") };
    match state.apikeys.revoke(Requester { sub: &sub, admin }, key.id, body, &s.user.actor(source.0)).await {
        Ok(k) => super::keys::table(&state, &s, Some(&format!("Key “{}” revoked.", k.name))).await,
        Err(e) => error_page(&state, &s, &e),
    }
}

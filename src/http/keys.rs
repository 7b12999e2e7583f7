//! `/v1/keys`: create, list, read, rotate, revoke and verify API keys, and read their usage.

use axum::{
    extract::State,
    http::{header, HeaderName, StatusCode},
    Json,
};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    apikeys::{
        answer::VerifyResponse, manage::Requester, ApiKeyView, CreatedKey, KeyPatch, NewKey, RevokeKey, RotateKey,
        Status, Verification, VerifyRequest,
    },
    http::caller::Caller,
    http::extract::{ApiJson, ApiPath, ApiQuery, ClientIp, OptionalJson, RequestId},
    http::problem::ApiError,
    http::state::AppState,
    usage::report::{Granularity, Usage},
};

type Problem = crate::http::openapi::Problem;
type NoStore = [(HeaderName, &'static str); 1];

const NO_STORE: NoStore = [(header::CACHE_CONTROL, "no-store")];

/// Routes of this surface.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_key, list_keys))
        .routes(routes!(verify_key))
        .routes(routes!(get_key, update_key))
        .routes(routes!(rotate_key))
        .routes(routes!(revoke_key))
        .routes(routes!(key_usage))
        .routes(routes!(key_anomalies))
}

fn requester(caller: &Caller) -> Requester<'_> {
    Requester { sub: caller.sub(), admin: caller.is_admin() }
}

/// Creates a key owned by the caller; the key itself is in this response only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("bearer" = ["keys:write"])),
    request_body = NewKey,
    responses(
        (status = 201, body = CreatedKey, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST, or SCOPE_RESERVED: a reserved scope (admin, introspect, revocations:read, keys:*, openid, profile, offline_access)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "INSUFFICIENT_SCOPE, or SCOPE_NOT_ALLOWED: a scope outside the owner's key_scopes"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "LIMIT_EXCEEDED: the owner has the most live keys allowed"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")
    ))]
async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<NewKey>,
) -> Result<(StatusCode, NoStore, Json<CreatedKey>), ApiError> {
    caller.require("keys:write")?;
    let created = state.apikeys.create(caller.sub(), body, &caller.actor(ip, rid)).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(created)))
}

/// Listing parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Another owner's keys (admin only).
    owner: Option<String>,
    /// Only keys in this status: `active`, `disabled`, `rotating`, `expired` or `revoked`.
    #[param(value_type = Option<Status>, inline)]
    status: Option<Status>,
}

/// The caller's keys (an admin: any owner's), oldest first; never the key or its hash.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = ["keys:read"])),
    params(ListParams),
    responses((status = 200, body = [ApiKeyView]), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListParams>,
) -> Result<Json<Vec<ApiKeyView>>, ApiError> {
    caller.require("keys:read")?;
    Ok(Json(state.apikeys.list(requester(&caller), q.owner.as_deref(), q.status).await?))
}

/// One key; another owner's key is not found (unless the caller is an admin).
#[utoipa::path(get, path = "/v1/keys/{id}", tag = "keys", security(("bearer" = ["keys:read"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKeyView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require("keys:read")?;
    Ok(Json(state.apikeys.get(requester(&caller), id).await?))
}

/// Edits a key (one's own; an admin: any): only the fields given change, on every instance within a second.
#[utoipa::path(patch, path = "/v1/keys/{id}", tag = "keys", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)), request_body = KeyPatch,
    responses((status = 200, body = ApiKeyView),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST naming the field, or SCOPE_RESERVED"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "INSUFFICIENT_SCOPE, or SCOPE_NOT_ALLOWED: a scope outside the owner's key_scopes"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "KEY_REVOKED: a revoked key cannot change; CONFLICT: a rotated key's expiry pushed past its grace"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn update_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<KeyPatch>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require("keys:write")?;
    Ok(Json(state.apikeys.update(requester(&caller), id, body, &caller.actor(ip, rid)).await?))
}

/// Replaces a key: the new key (shown this once) inherits everything; the old one stays valid for the grace period.
#[utoipa::path(post, path = "/v1/keys/{id}/rotate", tag = "keys", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)), request_body = Option<RotateKey>,
    responses(
        (status = 201, body = CreatedKey, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "CONFLICT: already rotated, revoked or expired"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")
    ))]
async fn rotate_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<RotateKey>,
) -> Result<(StatusCode, NoStore, Json<CreatedKey>), ApiError> {
    caller.require("keys:write")?;
    let created = state.apikeys.rotate(requester(&caller), id, body, &caller.actor(ip, rid)).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(created)))
}

/// Revokes a key (one's own; an admin: any), on every instance.
#[utoipa::path(post, path = "/v1/keys/{id}/revoke", tag = "keys", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)), request_body = Option<RevokeKey>,
    responses((status = 200, body = ApiKeyView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<RevokeKey>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require("keys:write")?;
    Ok(Json(state.apikeys.revoke(requester(&caller), id, body, &caller.actor(ip, rid)).await?))
}

/// Verifies a key: 200 with `valid: true` and the key's facts, or `valid: false` and why.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "keys", security(("bearer" = ["keys:verify"])),
    request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn verify_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<VerifyRequest>,
) -> Result<Json<Verification>, ApiError> {
    caller.require("keys:verify")?;
    Ok(Json(state.apikeys.verify(&body, ip).await?))
}

/// Usage query parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// Start, RFC 3339 (default: 24 hours before `to`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// End, RFC 3339 (default: now).
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// `minute` (default), `hour` or `day` (UTC days).
    #[param(inline)]
    bucket: Option<Granularity>,
}

/// A key's verifications by minute, hour or day, with totals, distinct sources and its last use.
#[utoipa::path(get, path = "/v1/keys/{id}/usage", tag = "keys", security(("bearer" = ["keys:read"])),
    params(("id" = Uuid, Path), UsageParams),
    responses((status = 200, body = Usage), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn key_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<UsageParams>,
) -> Result<Json<Usage>, ApiError> {
    caller.require("keys:read")?;
    state.apikeys.get(requester(&caller), id).await?;
    Ok(Json(state.usage.report(id, q.from, q.to, q.bucket.unwrap_or_default()).await?))
}

/// The anomalies of one key (owner or admin), oldest first, in the shape of `GET /v1/admin/anomalies`.
#[utoipa::path(get, path = "/v1/keys/{id}/anomalies", tag = "keys", security(("bearer" = ["keys:read"])),
    params(("id" = Uuid, Path), super::admin::AnomalyParams),
    responses((status = 200, body = [crate::usage::anomalies::Anomaly]), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn key_anomalies(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<super::admin::AnomalyParams>,
) -> Result<Json<Vec<crate::usage::anomalies::Anomaly>>, ApiError> {
    caller.require("keys:read")?;
    state.apikeys.get(requester(&caller), id).await?;
    let query = crate::usage::AnomalyQuery {
        since: q.since,
        after: q.after,
        kind: q.kind.as_deref(),
        key: Some(id),
        limit: super::extract::page_limit(q.limit)?,
    };
    Ok(Json(state.usage.anomalies(&query).await?))
}

//! `/v1/admin/*`: clients, users, signing keys, audit log and anomalies. Scope `admin` throughout.

use axum::{extract::State, http::StatusCode, Json};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    audit::{AuditEntry, AuditQuery},
    clients::{Client, ClientPatch, CreatedClient, NewClient},
    http::{
        caller::Caller,
        extract::{page_limit, ApiJson, ApiPath, ApiQuery, ClientIp, NoFields, OptionalJson, RequestId},
        problem::ApiError,
        state::AppState,
    },
    signing::{lifecycle::KeyInfo, Signs},
    usage::{anomalies::Anomaly, AnomalyQuery},
    users::{NewUser, UserPatch, UserView},
};

type Problem = crate::http::openapi::Problem;

/// Admin routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, patch_client, delete_client))
        .routes(routes!(rotate_client_secret))
        .routes(routes!(create_user, crate::http::lookups::list_users))
        .routes(routes!(get_user, patch_user, delete_user))
        .routes(routes!(list_signing_keys))
        .routes(routes!(rotate_signing_key))
        .routes(routes!(revoke_signing_key))
        .routes(routes!(list_audit))
        .routes(routes!(list_anomalies))
}

fn admin(caller: &Caller) -> Result<(), ApiError> {
    caller.require(crate::scopes::ADMIN)
}

/// Registers a client; a confidential client's secret is in this response only.
#[utoipa::path(post, path = "/v1/admin/clients", tag = "admin", security(("bearer" = ["admin"])),
    request_body = NewClient,
    responses(
        (status = 201, body = CreatedClient), (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST; SCOPE_RESERVED: a reserved scope in key_scopes; INVALID_REDIRECT_URI"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")
    ))]
async fn create_client(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<NewClient>,
) -> Result<(StatusCode, [(axum::http::HeaderName, &'static str); 1], Json<CreatedClient>), ApiError> {
    admin(&caller)?;
    let created = state.clients.create(body, &caller.actor(ip, rid)).await?;
    Ok((StatusCode::CREATED, [(axum::http::header::CACHE_CONTROL, "no-store")], Json(created)))
}

/// Every client.
#[utoipa::path(get, path = "/v1/admin/clients", tag = "admin", security(("bearer" = ["admin"])),
    responses((status = 200, body = [Client]), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_clients(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Client>>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.clients.list().await?))
}

/// One client.
#[utoipa::path(get, path = "/v1/admin/clients/{client_id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = Client), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Client>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.clients.get(&id).await?))
}

/// Gives a confidential client a new secret, shown this once; the old one stops working (on other
/// instances within seconds).
#[utoipa::path(post, path = "/v1/admin/clients/{client_id}/secret", tag = "admin", security(("bearer" = ["admin"])),
    params(("client_id" = String, Path)),
    responses((status = 200, body = CreatedClient, headers(("cache-control" = String, description = "no-store"))),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn rotate_client_secret(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
    OptionalJson(NoFields {}): OptionalJson<NoFields>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], Json<CreatedClient>), ApiError> {
    admin(&caller)?;
    let rotated = state.clients.rotate_secret(&id, &caller.actor(ip, rid)).await?;
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(rotated)))
}

/// Disables a client and revokes its refresh tokens.
#[utoipa::path(delete, path = "/v1/admin/clients/{client_id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("client_id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_client(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    state.clients.disable(&id, &caller.actor(ip, rid)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a client's name, scopes, `key_scopes` or redirect URIs; narrowing `key_scopes` narrows its API keys everywhere within a second.
#[utoipa::path(patch, path = "/v1/admin/clients/{client_id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("client_id" = String, Path)), request_body = ClientPatch,
    responses((status = 200, body = Client),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST; SCOPE_RESERVED: a reserved scope in key_scopes; INVALID_REDIRECT_URI"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn patch_client(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ClientPatch>,
) -> Result<Json<Client>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.clients.update(&id, body, &caller.actor(ip, rid)).await?))
}

/// Registers a user.
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", security(("bearer" = ["admin"])),
    request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    admin(&caller)?;
    let user = state.users.create(body, &caller.actor(ip, rid)).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// One user.
#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UserView>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.users.get(id).await?))
}

/// Deletes a user, revoking their refresh tokens and API keys.
#[utoipa::path(delete, path = "/v1/admin/users/{id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    admin(&caller)?;
    state.users.delete(id, &caller.actor(ip, rid)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes a user's scopes or `key_scopes`; narrowing `key_scopes` narrows their API keys everywhere within a second.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin", security(("bearer" = ["admin"])),
    params(("id" = Uuid, Path)), request_body = UserPatch,
    responses((status = 200, body = UserView),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST, or SCOPE_RESERVED: a reserved scope in key_scopes"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn patch_user(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.users.update(id, body, &caller.actor(ip, rid)).await?))
}

/// Query of `GET /v1/admin/signing-keys`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SigningKeysParams {
    /// Which keys: `access_token` (the default) or `id_token` (the RS256 keys of OpenID Connect
    /// ID tokens, which rotate with them).
    #[serde(default)]
    #[param(value_type = Option<Signs>)]
    signs: Signs,
}

/// The signing keys of access tokens (or, with `?signs=id_token`, of ID tokens), newest first; never any private part.
#[utoipa::path(get, path = "/v1/admin/signing-keys", tag = "admin", security(("bearer" = ["admin"])),
    params(SigningKeysParams),
    responses((status = 200, body = [KeyInfo]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_signing_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(SigningKeysParams { signs }): ApiQuery<SigningKeysParams>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.signing.list(signs).await?))
}

/// Query of `POST /v1/admin/signing-keys/rotate`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RotateParams {
    /// Rotate even though the next key has been published for less than the JWKS max-age
    /// (verifiers with a cached JWKS will meet an unknown `kid` until they refetch it).
    #[serde(default)]
    force: bool,
}

/// The next key becomes active, a new next key is made; the old active key stays published until its tokens expire.
///
/// While the next key has been published for less than `TESSERA_JWKS_MAX_AGE`, the answer is 409
/// `NEXT_KEY_TOO_NEW` with `not_before` and `Retry-After`: a verifier may have cached a JWKS
/// without it for that long. `?force=true` rotates anyway (an emergency: the active key is
/// suspected). Scheduled rotation always waits for the full max-age.
#[utoipa::path(post, path = "/v1/admin/signing-keys/rotate", tag = "admin", security(("bearer" = ["admin"])),
    params(RotateParams),
    responses((status = 200, body = [KeyInfo]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json",
         description = "NEXT_KEY_TOO_NEW: the problem carries `not_before` (RFC 3339)",
         headers(("Retry-After" = u64, description = "Seconds until the next key may become active")))))]
async fn rotate_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiQuery(RotateParams { force }): ApiQuery<RotateParams>,
    OptionalJson(NoFields {}): OptionalJson<NoFields>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.signing.rotate(&caller.actor(ip, rid), force).await?))
}

/// Revokes a key (of access tokens or of ID tokens): out of the JWKS at once, its tokens inactive, an event published; answers with the keys of its kind.
#[utoipa::path(post, path = "/v1/admin/signing-keys/{kid}/revoke", tag = "admin", security(("bearer" = ["admin"])),
    params(("kid" = String, Path)),
    responses((status = 200, body = [KeyInfo]), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn revoke_signing_key(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(kid): ApiPath<String>,
    OptionalJson(NoFields {}): OptionalJson<NoFields>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    admin(&caller)?;
    Ok(Json(state.signing.revoke(&kid, &caller.actor(ip, rid)).await?))
}

/// Audit query parameters.
#[derive(Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Entries at or after this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    since: Option<OffsetDateTime>,
    /// Entries after this one: the `id` of the last entry of the previous page. Pages never repeat
    /// or skip an entry, even when many share a time.
    after: Option<Uuid>,
    /// Page size (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// Only this actor.
    actor: Option<String>,
    /// Only this target id.
    target_id: Option<String>,
    /// Only this target type.
    target_type: Option<String>,
}

/// Who did what to which client, user, key or signing key, when, from where.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", security(("bearer" = ["admin"])),
    params(AuditParams),
    responses((status = 200, body = [AuditEntry]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditParams>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    admin(&caller)?;
    let limit = page_limit(q.limit)?;
    let query = AuditQuery {
        since: q.since,
        actor: q.actor,
        target_id: q.target_id,
        target_type: q.target_type,
        after: q.after,
        limit,
    };
    Ok(Json(state.audit.list(&query).await?))
}

/// Anomaly query parameters.
#[derive(Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// Anomalies detected at or after this RFC 3339 time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub(super) since: Option<OffsetDateTime>,
    /// Anomalies after this one: the `id` of the last entry of the previous page.
    pub(super) after: Option<Uuid>,
    /// Only this kind.
    pub(super) kind: Option<String>,
    /// Page size (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(super) limit: Option<i64>,
}

/// Detected anomalies.
#[utoipa::path(get, path = "/v1/admin/anomalies", tag = "admin", security(("bearer" = ["admin"])),
    params(AnomalyParams),
    responses((status = 200, body = [Anomaly]), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_anomalies(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AnomalyParams>,
) -> Result<Json<Vec<Anomaly>>, ApiError> {
    admin(&caller)?;
    let query = AnomalyQuery {
        since: q.since,
        after: q.after,
        kind: q.kind.as_deref(),
        key: None,
        limit: page_limit(q.limit)?,
    };
    Ok(Json(state.usage.anomalies(&query).await?))
}

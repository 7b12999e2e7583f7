//! Admin look-ups: every key (filtered, paginated), users by name, and a key by its plaintext; and
//! the bulk import of keys by hash.
//! Lists take `limit` (default 100, at most 1 000) and `after` (an opaque cursor) and answer a JSON
//! array, with `Link: <…>; rel="next"` (RFC 8288) when there is more.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    apikeys::{
        format::ApiKeySecret,
        import::{ImportRequest, Imported},
        lookup::{KeyFilter, Status},
        model::ApiKeyView,
    },
    error::Error,
    http::caller::Caller,
    http::extract::{ApiJson, ApiQuery, ClientIp, RequestId},
    http::problem::ApiError,
    http::state::AppState,
    users::UserView,
};

type Problem = crate::http::openapi::Problem;

/// Look-up routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_keys)).routes(routes!(lookup_key)).routes(routes!(import_keys))
}

/// `limit` and `after` of a list, checked: a page size of 1–1 000 (default 100) and a cursor that
/// is an id this service gave out.
pub(crate) fn page(limit: Option<i64>, after: Option<&str>) -> Result<(i64, Option<Uuid>), ApiError> {
    let limit = super::extract::page_limit(limit)?;
    let after = match after {
        None => None,
        Some(a) => {
            Some(Uuid::parse_str(a).map_err(|_| ApiError::bad_request("after: not a cursor this service gave out"))?)
        }
    };
    Ok((limit, after))
}

/// Cuts the extra row a query fetched and, when there was one, says where the next page starts.
pub(crate) fn paginate<T, Q: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    path: &str,
    query: &Q,
    id: impl Fn(&T) -> Uuid,
) -> (HeaderMap, Json<Vec<T>>) {
    let mut headers = HeaderMap::new();
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        if let Some(last) = rows.last() {
            let mut qs = serde_urlencoded::to_string(query).unwrap_or_default();
            if !qs.is_empty() {
                qs.push('&');
            }
            qs.push_str(&format!("after={}", id(last)));
            if let Ok(v) = HeaderValue::from_str(&format!("<{path}?{qs}>; rel=\"next\"")) {
                headers.insert(header::LINK, v);
            }
        }
    }
    (headers, Json(rows))
}

/// `GET /v1/admin/keys` query.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminKeysQuery {
    /// Only this owner's keys (a user or client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// Only the keys of the live user with this username (404 when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// `live` or `test`.
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    /// `active`, `disabled`, `rotating`, `expired` or `revoked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<Status>, inline)]
    status: Option<Status>,
    /// Page size, 1–1 000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    /// Cursor from the previous page's `Link` header.
    #[serde(skip_serializing)]
    after: Option<String>,
}

/// Every key of every owner, oldest first; never a key or its hash.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", security(("bearer" = ["admin"])),
    params(AdminKeysQuery),
    responses((status = 200, body = [ApiKeyView], headers(("link" = String, description = "RFC 8288 link to the next page, when there is one"))),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AdminKeysQuery>,
) -> Result<(HeaderMap, Json<Vec<ApiKeyView>>), ApiError> {
    caller.require("admin")?;
    let (limit, after) = page(q.limit, q.after.as_deref())?;
    if let Some(env) = q.environment.as_deref() {
        if !matches!(env, "live" | "test") {
            return Err(Error::invalid(format!("environment: must be live or test, got {env:?}")).into());
        }
    }
    let owner = match (&q.owner, &q.username) {
        (Some(_), Some(_)) => return Err(Error::invalid("owner, username: give one or the other").into()),
        (Some(o), None) if o.contains('\0') => return Err(Error::invalid("owner: must not contain U+0000").into()),
        (Some(o), None) => Some(o.clone()),
        (None, Some(u)) => Some(state.users.id_of(u).await?.to_string()),
        (None, None) => None,
    };
    let filter = KeyFilter { owner, environment: q.environment.clone(), status: q.status, after, limit };
    let rows = state.apikeys.list_all(&filter).await?;
    Ok(paginate(rows, limit, "/v1/admin/keys", &q, |k| k.id))
}

/// `GET /v1/admin/users` query.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsersQuery {
    /// Only the user with this username (case-insensitive); an empty list when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// Page size, 1–1 000 (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    /// Cursor from the previous page's `Link` header.
    #[serde(skip_serializing)]
    after: Option<String>,
}

/// Live users, oldest first.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", security(("bearer" = ["admin"])),
    params(UsersQuery),
    responses((status = 200, body = [UserView], headers(("link" = String, description = "RFC 8288 link to the next page, when there is one"))),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> Result<(HeaderMap, Json<Vec<UserView>>), ApiError> {
    caller.require("admin")?;
    let (limit, after) = page(q.limit, q.after.as_deref())?;
    if q.username.as_deref().is_some_and(|u| u.contains('\0')) {
        return Err(Error::invalid("username: must not contain U+0000").into());
    }
    let rows = state.users.list(q.username.as_deref(), after, limit).await?;
    Ok(paginate(rows, limit, "/v1/admin/users", &q, |u| u.user.id))
}

/// `POST /v1/admin/keys/lookup` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "tsk_live_EXAMPLE0000000000000000000000000000000abcdef"}))]
pub struct LookupRequest {
    /// The plaintext key, as found (in a log, a repository, a paste).
    #[schema(value_type = String)]
    key: ApiKeySecret,
}

/// The record of the key with this plaintext, for someone chasing a leaked key. Not a verification:
/// nothing is counted and `last_used_*` stays as it was.
#[utoipa::path(post, path = "/v1/admin/keys/lookup", tag = "admin", security(("bearer" = ["admin"])),
    request_body = LookupRequest,
    responses((status = 200, body = ApiKeyView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn lookup_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<LookupRequest>,
) -> Result<Json<ApiKeyView>, ApiError> {
    caller.require("admin")?;
    Ok(Json(state.apikeys.lookup(&body.key).await?))
}

/// Imports 1 to 1 000 keys from another system by the SHA-256 of their plaintext, all or none. Each
/// entry is checked as `POST /v1/keys` checks a new key; errors name `keys[i].field`. Keys are
/// stored only as keyed hashes and verify at once on every instance. Body at most 2 MiB.
#[utoipa::path(post, path = "/v1/admin/keys/import", tag = "admin", security(("bearer" = ["admin"])),
    request_body = ImportRequest,
    responses((status = 201, body = Imported),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST naming keys or keys[i].field; SCOPE_RESERVED"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "not admin; SCOPE_NOT_ALLOWED (keys[i].scopes outside the owner's key_scopes); the owner is disabled or deleted"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "CONFLICT: keys[i].hash already stored or repeated in the batch; LIMIT_EXCEEDED: an owner's key cap"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn import_keys(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<ImportRequest>,
) -> Result<(axum::http::StatusCode, Json<Imported>), ApiError> {
    caller.require("admin")?;
    let imported = state.apikeys.import(body.keys, &caller.actor(ip, rid)).await?;
    Ok((axum::http::StatusCode::CREATED, Json(imported)))
}

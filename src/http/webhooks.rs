//! `/v1/webhooks`: endpoints, their test event and delivery log; and `/v1/keys/leaks`, where
//! secret-scanning services report keys found in public.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderName, StatusCode},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    apikeys::{
        leaks::{LeakEntry, LeakLabel, MAX_ENTRIES},
        manage::Requester,
    },
    http::{
        caller::Caller,
        extract::{ApiJson, ApiPath, ApiQuery, ClientIp, RequestId},
        problem::ApiError,
        state::AppState,
    },
    webhooks::{CreatedEndpoint, DeliveryLogEntry, EndpointPatch, EndpointView, NewEndpoint},
};

type Problem = crate::http::openapi::Problem;
type NoStore = [(HeaderName, &'static str); 1];

const NO_STORE: NoStore = [(header::CACHE_CONTROL, "no-store")];
const SCOPE: &str = "keys:write";

/// Routes of this surface.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(report_leaks))
}

fn requester(caller: &Caller) -> Requester<'_> {
    Requester { sub: caller.sub(), admin: caller.is_admin() }
}

/// Creates an endpoint; its signing secret is in this response only. With scope `admin` it
/// receives every event; otherwise the events of the caller's own keys.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = ["keys:write"])),
    request_body = NewEndpoint,
    responses(
        (status = 201, body = CreatedEndpoint, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "INVALID_REQUEST: a URL that is not http(s) or points inside the network, an unknown event type"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json", description = "LIMIT_EXCEEDED"),
        (status = 413, body = Problem, content_type = "application/problem+json"), (status = 415, body = Problem, content_type = "application/problem+json")
    ))]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, NoStore, Json<CreatedEndpoint>), ApiError> {
    caller.require(SCOPE)?;
    let created = state.webhooks.create(requester(&caller), body, &caller.actor(ip, rid)).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(created)))
}

/// The caller's endpoints (an admin: every endpoint), oldest first; never a secret.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(PageQuery),
    responses((status = 200, body = [EndpointView], headers(("Link" = String, description = "rel=\"next\" when there is more"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Vec<EndpointView>>), ApiError> {
    caller.require(SCOPE)?;
    let (limit, after) = super::lookups::page(q.limit, q.after.as_deref())?;
    let rows = state.webhooks.list(requester(&caller), after, limit + 1).await?;
    Ok(super::lookups::paginate(rows, limit, "/v1/webhooks", &q, |r| r.id))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndpointView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(SCOPE)?;
    Ok(Json(state.webhooks.get(requester(&caller), id).await?))
}

/// Changes an endpoint's `url`, `events`, `enabled` or `description`.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)), request_body = EndpointPatch,
    responses((status = 200, body = EndpointView), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json")))]
async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<EndpointPatch>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(SCOPE)?;
    Ok(Json(state.webhooks.update(requester(&caller), id, body, &caller.actor(ip, rid)).await?))
}

/// Deletes an endpoint and what it still had to receive.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(SCOPE)?;
    state.webhooks.delete(requester(&caller), id, &caller.actor(ip, rid)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a `webhook.test` event to the endpoint (queued like any other; see its delivery log).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path)),
    responses((status = 202), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    caller.require(SCOPE)?;
    state.webhooks.test(requester(&caller), id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Paging of the delivery log.
#[derive(Debug, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–1 000 (default 100).
    #[serde(skip_serializing)]
    limit: Option<i64>,
    /// Cursor from the previous page's `Link` header.
    #[serde(skip_serializing)]
    after: Option<String>,
}

/// The endpoint's delivery log, newest first: one line per attempt (and per delivery not yet
/// attempted). `message_id` is the `webhook-id` header, the same on every attempt of one event.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = ["keys:write"])),
    params(("id" = Uuid, Path), PageQuery),
    responses((status = 200, body = [DeliveryLogEntry], headers(("Link" = String, description = "rel=\"next\" when there is more"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<(HeaderMap, Json<Vec<DeliveryLogEntry>>), ApiError> {
    caller.require(SCOPE)?;
    let (limit, after) = super::lookups::page(q.limit, q.after.as_deref())?;
    let rows = state.webhooks.deliveries(requester(&caller), id, after, limit + 1).await?;
    let path = format!("/v1/webhooks/{id}/deliveries");
    Ok(super::lookups::paginate(rows, limit, &path, &q, |r| r.id))
}

/// One reported token (other members are ignored).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({"token": "tsk_live_…", "type": "tessera_api_key",
    "url": "https://github.com/octo/app/blob/main/.env", "source": "github"}))]
#[allow(dead_code)]
struct LeakReportEntry {
    /// The token found.
    token: String,
    /// Its type, as the reporter names it; echoed back.
    r#type: Option<String>,
    /// Where it was found (an http(s) URL of at most 2 048 characters, else dropped).
    url: Option<String>,
    /// Who found it (at most 64 characters, else dropped).
    source: Option<String>,
}

/// Reports keys found in public (no authentication: holding a key is proof enough). Answers one
/// label per entry, in order; real keys are revoked (or flagged, per `TESSERA_LEAK_POLICY`).
/// Bodies up to 1 MiB and 1 000 entries; throttled per source address.
#[utoipa::path(post, path = "/v1/keys/leaks", tag = "webhooks", security(()),
    request_body = [LeakReportEntry],
    responses((status = 200, body = [LeakLabel]), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json", description = "over 1 MiB or 1 000 entries"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json")))]
async fn report_leaks(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    RequestId(rid): RequestId,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<Vec<LeakLabel>>, ApiError> {
    let serde_json::Value::Array(items) = body else {
        return Err(ApiError::bad_request(
            "the body must be a JSON array of {\"token\", \"type\", \"url\", \"source\"}",
        ));
    };
    if items.len() > MAX_ENTRIES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("at most {MAX_ENTRIES} entries per report"),
        ));
    }
    let entries = items.iter().enumerate().map(|(i, v)| LeakEntry::from_json(i, v)).collect::<Result<Vec<_>, _>>()?;
    let actor = crate::audit::Actor { id: "leak-report".into(), ip: Some(ip.to_string()), request_id: rid };
    Ok(Json(state.leaks.report(ip, entries, &actor).await?))
}

//! `GET /v1/revocations`: catch-up for services that were offline; `GET /v1/revocations/stream`:
//! the same log followed live as Server-Sent Events.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, Sse},
    Json,
};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    http::{
        caller::Caller,
        extract::{page_limit, ApiQuery},
        problem::ApiError,
        state::AppState,
    },
    revocation::{stream::Item, Cursor, RevocationEvent},
};

/// Revocation routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(stream))
}

/// Paging parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Return events with `seq` greater than this (default 0).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// A page of events.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "events": [
        {
            "seq": 4182,
            "kind": "access_token",
            "id": "01a20d0b-2560-7ac4-9bd0-bd72a1d6bafb",
            "jti": "01a20d0b-2560-7ac4-9bd0-bd72a1d6bafb",
            "expires_at": "2026-11-24T10:22:44Z",
            "revoked_at": "2026-11-24T10:14:03Z",
            "reason": "revoked by client"
        },
        {
            "seq": 4183,
            "kind": "api_key",
            "id": "01a1feff-a810-7c70-a12b-7a0646f92279",
            "expires_at": "2027-02-19T16:45:30Z",
            "revoked_at": "2026-11-24T10:58:12Z",
            "reason": "leaked in a CI log"
        }
    ],
    "next_after": 4183
}))]
pub struct Page {
    /// Events in `seq` order.
    events: Vec<RevocationEvent>,
    /// Pass as `after` to get the next page (the last `seq` here, or `after` if none).
    next_after: i64,
}

/// Revocation events after `after`, in strictly increasing `seq`; never skips one.
#[utoipa::path(get, path = "/v1/revocations", tag = "revocations", security(("bearer" = ["revocations:read"])),
    params(Params),
    responses((status = 200, body = Page), (status = 400, body = crate::http::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::http::openapi::Problem, content_type = "application/problem+json"), (status = 403, body = crate::http::openapi::Problem, content_type = "application/problem+json"),
        (status = 410, description = "`CURSOR_EXPIRED`: events after `after` are no longer kept (`oldest_seq` says where the log starts)", body = crate::http::openapi::Problem, content_type = "application/problem+json")))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(p): ApiQuery<Params>,
) -> Result<Json<Page>, ApiError> {
    caller.require("revocations:read")?;
    let after = p.after.unwrap_or(0);
    let events = state.revocations.page(after, page_limit(p.limit)?).await?;
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(Page { events, next_after }))
}

/// Where to resume the stream.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume after this `seq` (the `Last-Event-ID` header wins over it). Without either, only
    /// events committed after the connection opened are sent.
    #[param(minimum = 0)]
    after: Option<i64>,
}

/// SSE reconnection delay the stream asks for (`retry: 1000`).
const RETRY: Duration = Duration::from_millis(1000);

/// Revocation events as Server-Sent Events, resumable with `Last-Event-ID`.
///
/// First `retry: 1000`; then each event as `event: revocation`, `id: <seq>` and one `data:` line of
/// compact JSON; a comment line at least every 15 s. A cursor older than what is kept gets
/// `event: reset` with `data: {"oldest_seq": n}` and the stream closes. The stream closes when its
/// bearer token expires or is revoked (reconnect with a fresh one and `Last-Event-ID`).
#[utoipa::path(get, path = "/v1/revocations/stream", tag = "revocations", security(("bearer" = ["revocations:read"])),
    params(StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this `seq`; wins over `after`")),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, body = crate::http::openapi::Problem, content_type = "application/problem+json"),
        (status = 401, body = crate::http::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, body = crate::http::openapi::Problem, content_type = "application/problem+json")))]
async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require("revocations:read")?;
    let cursor = match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(Cursor::After)
            .ok_or_else(|| ApiError::bad_request("Last-Event-ID: must be a seq, an integer of 0 or more"))?,
        None => match p.after {
            Some(n) if n < 0 => return Err(ApiError::bad_request("after: must be 0 or more")),
            Some(n) => Cursor::After(n),
            None => Cursor::Latest,
        },
    };
    // The caller extractor accepted this header, so it holds one bearer token.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| crate::http::caller::bearer_token(h.as_bytes()).ok())
        .map(str::to_owned)
        .unwrap_or_default();
    let tokens = state.tokens.clone();
    let authorised = move || tokens.validate_access_token(&token).is_ok();
    let follow = state.revocations.follow(cursor, authorised).await?;
    let first = futures::stream::once(async { Ok(Event::default().retry(RETRY)) });
    let events = follow.into_stream().map(|item| {
        Ok(match item {
            Item::Event(ev) => Event::default()
                .event("revocation")
                .id(ev.seq.to_string())
                .data(serde_json::to_string(&ev).unwrap_or_default()),
            Item::Heartbeat => Event::default().comment("keep-alive"),
            Item::Reset { oldest_seq } => {
                Event::default().event("reset").data(serde_json::json!({ "oldest_seq": oldest_seq }).to_string())
            }
        })
    });
    Ok(Sse::new(first.chain(events)))
}

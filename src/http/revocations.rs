//! `GET /v1/revocations`: catch-up for services that were offline.

use axum::{extract::State, Json};
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
    revocation::RevocationEvent,
};

/// Revocation routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
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
        (status = 401, body = crate::http::openapi::Problem, content_type = "application/problem+json"), (status = 403, body = crate::http::openapi::Problem, content_type = "application/problem+json")))]
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

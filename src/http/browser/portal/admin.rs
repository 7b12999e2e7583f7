//! The portal's admin pages (users holding `admin`): clients, users, signing keys (with
//! "Rotate"), anomalies across all keys, the audit log, webhooks and their deliveries. Read-only
//! tables, from the same service calls as the `/v1/admin` endpoints; anyone else gets 403.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Serialize;
use serde_json::Value;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{admin_pages, error_page, pages, signed, signed_post_with, Signed};
use crate::{
    apikeys::manage::Requester,
    audit::AuditQuery,
    error::Error,
    http::{
        browser::{html, parse_pairs, see_other},
        source::SourceIp,
        state::AppState,
    },
    signing::Signs,
    usage::AnomalyQuery,
};

/// Rows shown per admin table.
const ROWS: i64 = 200;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(clients))
        .routes(routes!(users))
        .routes(routes!(signing_keys))
        .routes(routes!(rotate_signing_key))
        .routes(routes!(anomalies))
        .routes(routes!(audit))
        .routes(routes!(webhooks))
}

/// The signed-in admin, or the response to send: sign in, or 403 for anyone else.
async fn admin(state: &AppState, headers: &HeaderMap) -> Result<Signed, Response> {
    let s = signed(state, headers).await?;
    if !s.user.admin {
        return Err(html(
            StatusCode::FORBIDDEN,
            pages::message(&s.frame(state), "Not allowed", "These pages are for administrators only."),
        ));
    }
    Ok(s)
}

fn render<T: Serialize>(
    state: &AppState,
    s: &Signed,
    title: &str,
    cols: &[&str],
    rows: Result<Vec<T>, Error>,
    extra: Option<maud::Markup>,
) -> Response {
    match rows {
        Ok(rows) => {
            let rows: Vec<Value> = rows.iter().filter_map(|r| serde_json::to_value(r).ok()).collect();
            html(StatusCode::OK, admin_pages::admin_table(&s.frame(state), title, cols, &rows, extra))
        }
        Err(e) => error_page(state, s, &e),
    }
}

macro_rules! page {
    ($name:ident, $path:literal, $doc:literal, |$state:ident, $s:ident| $body:expr) => {
        #[doc = $doc]
        #[utoipa::path(get, path = $path, tag = "portal",
                                    responses((status = 200, description = "The table", content_type = "text/html"),
                                        (status = 403, description = "Not an admin", content_type = "text/html")))]
        async fn $name(State($state): State<AppState>, headers: HeaderMap) -> Response {
            let $s = match admin(&$state, &headers).await {
                Ok(s) => s,
                Err(res) => return res,
            };
            $body
        }
    };
}

page!(clients, "/portal/admin/clients", "Every OAuth client.", |state, s| {
    let rows = state.clients.list().await;
    render(
        &state,
        &s,
        "Clients",
        &["client_id", "name", "public", "grant_types", "scopes", "created_at", "disabled_at"],
        rows,
        None,
    )
});

page!(users, "/portal/admin/users", "Users (the first 200).", |state, s| {
    let rows = state.users.list(None, None, ROWS).await;
    render(&state, &s, "Users", &["id", "username", "scopes", "created_at"], rows, None)
});

page!(signing_keys, "/portal/admin/signing-keys", "Signing keys, with a \"Rotate\" button.", |state, s| {
    let access = state.signing.list(Signs::AccessToken).await;
    let rows = match access {
        Ok(mut rows) => state.signing.list(Signs::IdToken).await.map(|id| {
            rows.extend(id);
            rows
        }),
        Err(e) => Err(e),
    };
    let form = admin_pages::rotate_signing_form(&s.frame(&state));
    render(
        &state,
        &s,
        "Signing keys",
        &["kid", "signs", "alg", "state", "created_at", "activated_at", "retired_at"],
        rows,
        Some(form),
    )
});

page!(anomalies, "/portal/admin/anomalies", "Anomalies across every key and client.", |state, s| {
    let rows =
        state.usage.anomalies(&AnomalyQuery { since: None, after: None, kind: None, key: None, limit: 1000 }).await;
    let rows = rows.map(|mut r| {
        r.reverse();
        r.truncate(ROWS as usize);
        r
    });
    render(&state, &s, "Anomalies", &["detected_at", "kind", "key_id", "client_id", "details"], rows, None)
});

page!(audit, "/portal/admin/audit", "The audit log (its first 200 entries, oldest first).", |state, s| {
    let q = AuditQuery { since: None, actor: None, target_id: None, target_type: None, after: None, limit: ROWS };
    let rows = state.audit.list(&q).await;
    render(&state, &s, "Audit log", &["at", "actor", "action", "target_type", "target_id", "ip"], rows, None)
});

page!(webhooks, "/portal/admin/webhooks", "Webhook endpoints and their latest deliveries.", |state, s| {
    let sub = s.user.user_id.to_string();
    let who = Requester { sub: &sub, admin: true };
    let endpoints = match state.webhooks.list(who, None, ROWS).await {
        Ok(e) => e,
        Err(e) => return error_page(&state, &s, &e),
    };
    let mut deliveries = Vec::new();
    for ep in &endpoints {
        match state.webhooks.deliveries(Requester { sub: &sub, admin: true }, ep.id, None, 20).await {
            Ok(d) => deliveries.extend(d.into_iter().filter_map(|d| serde_json::to_value(d).ok())),
            Err(e) => return error_page(&state, &s, &e),
        }
    }
    let extra = admin_pages::json_table(
        "Latest deliveries",
        &["endpoint_id", "event_type", "status", "attempts", "response_status", "created_at"],
        &deliveries,
    );
    render(
        &state,
        &s,
        "Webhooks",
        &["id", "url", "owner", "events", "enabled", "created_at"],
        Ok::<_, Error>(endpoints),
        Some(extra),
    )
});

/// Rotates the signing keys (refused while the next key is too new to sign).
#[utoipa::path(post, path = "/portal/admin/signing-keys/rotate", tag = "portal",
    request_body(content_type = "application/x-www-form-urlencoded", description = "`csrf_token`"),
    responses((status = 303, description = "Back to the signing keys"),
        (status = 409, description = "The next key is too new", content_type = "text/html")))]
async fn rotate_signing_key(
    State(state): State<AppState>,
    source: SourceIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs = parse_pairs(&body);
    let s = match signed_post_with(&state, &headers, &pairs, "admin").await {
        Ok(s) => s,
        Err(res) => return res,
    };
    match state.signing.rotate(&s.user.actor(source.0), false).await {
        Ok(_) => see_other(&format!("{}/portal/admin/signing-keys", s.base)),
        Err(e) => error_page(&state, &s, &e),
    }
}

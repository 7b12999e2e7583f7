//! Revoking keys, here and on another instance, and the audit trail of a key's life.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_here_and_within_seconds_on_another_instance() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let key = key_of(&created).to_owned();
    // Both instances have it cached as valid.
    assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");
    assert_eq!(code(&peer, &token, json!({"key": key})).await, "VALID");

    let res = revoke(&app, &token, id_of(&created), json!({"reason": "leaked"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    let body: Value = res.json().await.unwrap();
    assert!(body["revoked_at"].is_string());
    assert_eq!(body["revoked_reason"], "leaked");
    assert!(body.get("key").is_none());
    assert_eq!(code(&app, &token, json!({"key": key})).await, "REVOKED");

    let within = Duration::from_secs(3).saturating_sub(revoked_at.elapsed());
    eventually(within, "the peer refuses the revoked key", || async {
        code(&peer, &token, json!({"key": key})).await == "REVOKED"
    })
    .await;

    // The outbox holds the event, written with the change; revoking again changes nothing.
    let mut db = app.db().await;
    let events: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT kind, reason FROM revocation_events WHERE subject_id = $1")
            .bind(id_of(&created))
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(events, vec![("api_key".to_owned(), Some("leaked".to_owned()))]);
    let again: Value = revoke(&app, &token, id_of(&created), json!({"reason": "other"})).await.json().await.unwrap();
    assert_eq!(again["revoked_at"], body["revoked_at"]);
    assert_eq!(again["revoked_reason"], "leaked");
}

#[tokio::test]
async fn deleting_a_user_revokes_their_api_keys_everywhere() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let (token, user) = developer(&app).await;
    let checker = app.token_with_scopes(&["keys:verify"]).await;
    let created = simple_key(&app, &token).await;
    let key = key_of(&created).to_owned();
    assert_eq!(code(&peer, &checker, json!({"key": key})).await, "VALID");
    let admin = app.admin_token().await;
    assert_eq!(app.delete_auth(&format!("/v1/admin/users/{user}"), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(code(&app, &checker, json!({"key": key})).await, "REVOKED");
    eventually(Duration::from_secs(2), "the peer refuses a deleted user's key", || async {
        code(&peer, &checker, json!({"key": key})).await == "REVOKED"
    })
    .await;
}

#[tokio::test]
async fn create_rotate_and_revoke_are_audited_with_actor_address_and_request_id() {
    let app = spawn_app().await;
    let (token, user) = developer(&app).await;
    let post = |path: String, body: Value, rid: &'static str| {
        app.http.post(app.url(&path)).bearer_auth(&token).header("x-request-id", rid).json(&body).send()
    };
    let created: Value =
        post("/v1/keys".into(), json!({"name": "a", "scopes": [], "environment": "live"}), "rid-create")
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let id = id_of(&created).to_owned();
    let rotated: Value =
        post(format!("/v1/keys/{id}/rotate"), json!({}), "rid-rotate").await.unwrap().json().await.unwrap();
    post(format!("/v1/keys/{}/revoke", id_of(&rotated)), json!({"reason": "r"}), "rid-revoke").await.unwrap();

    let admin = app.admin_token().await;
    let entries: Value = app.get_auth("/v1/admin/audit?target_type=api_key", &admin).await.json().await.unwrap();
    let entries = entries.as_array().unwrap();
    let find = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("no {action}"));
    for (action, target, rid) in [
        ("api_key.create", id.as_str(), "rid-create"),
        ("api_key.rotate", id.as_str(), "rid-rotate"),
        ("api_key.revoke", id_of(&rotated), "rid-revoke"),
    ] {
        let e = find(action);
        assert_eq!(e["target_id"], target, "{e}");
        assert_eq!(e["actor"], user.as_str());
        assert_eq!(e["ip"], "127.0.0.1");
        assert_eq!(e["request_id"], rid);
    }
    assert_eq!(find("api_key.rotate")["details"]["rotated_to"], rotated["id"]);
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(body_of(key_of(&created))) && !text.contains(body_of(key_of(&rotated))));
}

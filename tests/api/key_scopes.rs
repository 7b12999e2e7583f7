//! Least privilege for API keys: an owner's `key_scopes` bound what its keys may carry and, live at
//! verification, what they grant (on every instance within a second); reserved scopes are never on a
//! key; a disabled client's keys are revoked everywhere; PATCH of users and clients.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

/// A user who logged in with the password grant: (access token, user id).
async fn developer(app: &TestApp) -> (String, String) {
    let login = setup_login(app, &ALL, &ALL).await;
    let res = password_grant(app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_owned(), login.user_id)
}

async fn patch(app: &TestApp, path: &str, token: &str, body: &Value) -> reqwest::Response {
    app.http.patch(app.url(path)).bearer_auth(token).json(body).send().await.unwrap()
}

async fn new_key(app: &TestApp, token: &str, scopes: &[&str]) -> reqwest::Response {
    app.post_json("/v1/keys", token, &json!({"name": "k", "scopes": scopes, "environment": "live"})).await
}

async fn created_key(app: &TestApp, token: &str, scopes: &[&str]) -> Value {
    let res = new_key(app, token, scopes).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn verify(app: &TestApp, token: &str, key: &str, scopes: &[&str]) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &json!({"key": key, "scopes": scopes})).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The verification code (`VALID` when valid).
async fn code(app: &TestApp, token: &str, key: &str, scopes: &[&str]) -> String {
    let v = verify(app, token, key, scopes).await;
    if v["valid"] == true {
        "VALID".into()
    } else {
        v["code"].as_str().unwrap().to_owned()
    }
}

/// Polls `app` until `key` verified for `scopes` answers `want`, failing after `within`.
async fn await_code(app: &TestApp, token: &str, key: &str, scopes: &[&str], want: &str, within: Duration) {
    eventually(within, &format!("the verification answers {want}"), || async {
        let got = code(app, token, key, scopes).await;
        if got == want {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await
}

#[tokio::test]
async fn a_key_may_carry_only_its_owners_key_scopes_and_never_a_reserved_scope() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (token, user) = developer(&app).await;

    // The field report: a user holding only keys:read keys:write, default key_scopes.
    for reserved in ["admin", "introspect", "revocations:read", "keys:verify", "openid", "profile", "offline_access"] {
        let res = new_key(&app, &token, &["payments:write", reserved]).await;
        let body = assert_problem(res, 400, "SCOPE_RESERVED").await;
        assert!(body["detail"].as_str().unwrap().contains(reserved), "{body}");
    }
    assert_eq!(new_key(&app, &token, &["payments:write"]).await.status(), StatusCode::CREATED);

    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": ["deploy"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["key_scopes"], json!(["deploy"]));
    assert_eq!(body["id"], user.as_str());

    let key = created_key(&app, &token, &["deploy"]).await;
    assert_eq!(key["scopes"], json!(["deploy"]));
    assert_eq!(key["effective_scopes"], json!(["deploy"]));
    let body =
        assert_problem(new_key(&app, &token, &["deploy", "payments:write"]).await, 403, "SCOPE_NOT_ALLOWED").await;
    assert!(body["detail"].as_str().unwrap().contains("payments:write"), "{body}");
    // Reserved is checked first, even where key_scopes would refuse it anyway.
    assert_problem(new_key(&app, &token, &["admin"]).await, 400, "SCOPE_RESERVED").await;

    // `[]`: no scope at all, but a key without scopes is still allowed.
    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": []})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(new_key(&app, &token, &["deploy"]).await, 403, "SCOPE_NOT_ALLOWED").await;
    assert_eq!(new_key(&app, &token, &[]).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn key_scopes_are_set_at_creation_and_shown() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": "ks-user", "password": "correct horse battery", "scopes": ["keys:write"], "key_scopes": ["deploy"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["key_scopes"], json!(["deploy"]));
    let got: Value =
        app.get_auth(&format!("/v1/admin/users/{}", user["id"].as_str().unwrap()), &admin).await.json().await.unwrap();
    assert_eq!(got["key_scopes"], json!(["deploy"]));
    assert_eq!(got["username"], "ks-user");

    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "c", "grant_types": ["client_credentials"], "scopes": ["keys:write"], "key_scopes": ["a", "b"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let client: Value = res.json().await.unwrap();
    assert_eq!(client["key_scopes"], json!(["a", "b"]));
    let id = client["client_id"].as_str().unwrap();
    let got: Value = app.get_auth(&format!("/v1/admin/clients/{id}"), &admin).await.json().await.unwrap();
    assert_eq!(got["key_scopes"], json!(["a", "b"]));
    // The default is null: any scope that is not reserved.
    let (other, _) = app.create_client(&["client_credentials"], &[]).await;
    let got: Value = app.get_auth(&format!("/v1/admin/clients/{other}"), &admin).await.json().await.unwrap();
    assert!(got["key_scopes"].is_null(), "{got}");

    // A client's key_scopes bound its own keys as a user's do.
    let secret = client["client_secret"].as_str().unwrap();
    let token: Value = app.token_for(id, secret, None).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    assert_eq!(new_key(&app, token, &["a"]).await.status(), StatusCode::CREATED);
    assert_problem(new_key(&app, token, &["c"]).await, 403, "SCOPE_NOT_ALLOWED").await;
}

#[tokio::test]
async fn reserved_scopes_in_key_scopes_are_refused_on_create_and_patch() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, user) = developer(&app).await;
    let (client, _) = app.create_client(&["client_credentials"], &[]).await;
    for reserved in ["admin", "keys:write", "introspect", "openid"] {
        let res = app
            .post_json(
                "/v1/admin/users",
                &admin,
                &json!({"username": format!("r{}", reserved.len()), "password": "correct horse battery", "key_scopes": ["a", reserved]}),
            )
            .await;
        assert_problem(res, 400, "SCOPE_RESERVED").await;
        let res = app
            .post_json(
                "/v1/admin/clients",
                &admin,
                &json!({"name": "c", "grant_types": ["client_credentials"], "scopes": [], "key_scopes": [reserved]}),
            )
            .await;
        assert_problem(res, 400, "SCOPE_RESERVED").await;
        let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": [reserved]})).await;
        assert_problem(res, 400, "SCOPE_RESERVED").await;
        let res = patch(&app, &format!("/v1/admin/clients/{client}"), &admin, &json!({"key_scopes": [reserved]})).await;
        assert_problem(res, 400, "SCOPE_RESERVED").await;
    }
    let got: Value = app.get_auth(&format!("/v1/admin/users/{user}"), &admin).await.json().await.unwrap();
    assert!(got["key_scopes"].is_null(), "a refused PATCH changed nothing: {got}");
    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": ["bad scope"]})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn patch_refuses_unknown_fields_unknown_targets_and_non_admins() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (token, user) = developer(&app).await;
    let (client, _) = app.create_client(&["client_credentials"], &[]).await;
    let res =
        patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": [], "password": "x"})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    let res = patch(&app, &format!("/v1/admin/clients/{client}"), &admin, &json!({"client_secret": "x"})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    let res = patch(&app, &format!("/v1/admin/clients/{client}"), &admin, &json!({"name": " "})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    let missing = uuid::Uuid::now_v7();
    let res = patch(&app, &format!("/v1/admin/users/{missing}"), &admin, &json!({"key_scopes": []})).await;
    assert_problem(res, 404, "NOT_FOUND").await;
    let res = patch(&app, "/v1/admin/clients/no-such-client", &admin, &json!({"name": "n"})).await;
    assert_problem(res, 404, "NOT_FOUND").await;
    let res = patch(&app, &format!("/v1/admin/users/{user}"), &token, &json!({"key_scopes": null})).await;
    assert_problem(res, 403, "INSUFFICIENT_SCOPE").await;
    let res = patch(&app, "/v1/admin/users/not-a-uuid", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Fields that cannot be empty cannot be null either (null was read as "left out": 200, no change).
    for (path, field) in [
        (format!("/v1/admin/clients/{client}"), "name"),
        (format!("/v1/admin/clients/{client}"), "scopes"),
        (format!("/v1/admin/clients/{client}"), "redirect_uris"),
        (format!("/v1/admin/users/{user}"), "scopes"),
    ] {
        let body =
            assert_problem(patch(&app, &path, &admin, &json!({field: null})).await, 400, "INVALID_REQUEST").await;
        assert!(body["detail"].as_str().unwrap().contains(field), "{field}: {body}");
    }
}

#[tokio::test]
async fn patch_answers_the_resource_and_is_audited() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (client, _) = app.create_client(&["client_credentials"], &["x"]).await;
    let res = patch(
        &app,
        &format!("/v1/admin/clients/{client}"),
        &admin,
        &json!({"name": "Renamed", "scopes": ["x", "y"], "key_scopes": ["y"]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (&body["name"], &body["scopes"], &body["key_scopes"]),
        (&json!("Renamed"), &json!(["x", "y"]), &json!(["y"]))
    );
    assert!(body.get("client_secret").is_none() && body.get("secret_hash").is_none());
    // Absent fields are unchanged; null key_scopes means "any scope that is not reserved" again.
    let res = patch(&app, &format!("/v1/admin/clients/{client}"), &admin, &json!({"key_scopes": null})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!((&body["name"], &body["scopes"]), (&json!("Renamed"), &json!(["x", "y"])));
    assert!(body["key_scopes"].is_null(), "{body}");

    let (_, user) = developer(&app).await;
    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"scopes": ["keys:read"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scopes"], json!(["keys:read"]));

    let audit: Vec<Value> = app.get_auth("/v1/admin/audit?target_type=client", &admin).await.json().await.unwrap();
    let updates: Vec<&Value> =
        audit.iter().filter(|e| e["action"] == "client.update" && e["target_id"] == client.as_str()).collect();
    assert_eq!(updates.len(), 2, "{audit:?}");
    assert_eq!(updates[0]["details"]["key_scopes"], json!({"from": null, "to": ["y"]}));
    assert_eq!(updates[0]["details"]["name"], "Renamed");
    let audit: Vec<Value> =
        app.get_auth(&format!("/v1/admin/audit?target_id={user}"), &admin).await.json().await.unwrap();
    assert!(
        audit.iter().any(|e| e["action"] == "user.update" && e["details"]["scopes"] == json!(["keys:read"])),
        "{audit:?}"
    );
}

#[tokio::test]
async fn narrowing_key_scopes_narrows_existing_keys_on_every_instance_within_a_second() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let (token, user) = developer(&app).await;
    let key = created_key(&app, &token, &["deploy", "read"]).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    // Both instances have it cached, granting deploy.
    assert_eq!(code(&app, &token, secret, &["deploy"]).await, "VALID");
    assert_eq!(code(&peer, &token, secret, &["deploy"]).await, "VALID");

    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": ["read"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let patched = Instant::now();
    assert_eq!(code(&app, &token, secret, &["deploy"]).await, "INSUFFICIENT_SCOPE", "at once where it was changed");
    await_code(
        &peer,
        &token,
        secret,
        &["deploy"],
        "INSUFFICIENT_SCOPE",
        Duration::from_secs(1).saturating_sub(patched.elapsed()),
    )
    .await;

    // Verify answers with the effective scopes; GET shows both.
    let v = verify(&peer, &token, secret, &["read"]).await;
    assert_eq!((&v["valid"], &v["scopes"]), (&json!(true), &json!(["read"])), "{v}");
    let got: Value = peer.get_auth(&format!("/v1/keys/{id}"), &token).await.json().await.unwrap();
    assert_eq!((&got["scopes"], &got["effective_scopes"]), (&json!(["deploy", "read"]), &json!(["read"])));
    let list: Vec<Value> = peer.get_auth("/v1/keys", &token).await.json().await.unwrap();
    assert_eq!(list[0]["effective_scopes"], json!(["read"]));

    // Verifiers outside Tessera learn it too: an api_key_changed event naming the key.
    let events: Value = app.get_auth("/v1/revocations?after=0&limit=1000", &admin).await.json().await.unwrap();
    let changed: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "api_key_changed").collect();
    assert_eq!(changed.len(), 1, "{events}");
    assert_eq!(changed[0]["id"], id);

    // Widening back reaches the peer too (best effort, well within the cache TTL).
    let res = patch(&app, &format!("/v1/admin/users/{user}"), &admin, &json!({"key_scopes": null})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(code(&app, &token, secret, &["deploy"]).await, "VALID");
    await_code(&peer, &token, secret, &["deploy"], "VALID", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_key_holding_a_reserved_scope_from_before_the_rule_does_not_grant_it() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let key = created_key(&app, &token, &["deploy"]).await;
    let mut db = app.db().await;
    sqlx::query("UPDATE api_keys SET scopes = '{admin,deploy,keys:write}' WHERE id = $1::uuid")
        .bind(key["id"].as_str().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(code(&app, &token, secret, &["admin"]).await, "INSUFFICIENT_SCOPE");
    assert_eq!(code(&app, &token, secret, &["keys:write"]).await, "INSUFFICIENT_SCOPE");
    let v = verify(&app, &token, secret, &["deploy"]).await;
    assert_eq!(v["scopes"], json!(["deploy"]), "{v}");
    let got: Value =
        app.get_auth(&format!("/v1/keys/{}", key["id"].as_str().unwrap()), &token).await.json().await.unwrap();
    assert_eq!(
        (&got["scopes"], &got["effective_scopes"]),
        (&json!(["admin", "deploy", "keys:write"]), &json!(["deploy"]))
    );
}

#[tokio::test]
async fn disabling_a_client_revokes_its_keys_on_every_instance_within_a_second() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let (client, secret) = app.create_client(&["client_credentials"], &["keys:write", "keys:read"]).await;
    let token: Value = app.token_for(&client, &secret, None).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let key = created_key(&app, &token, &["deploy"]).await;
    let (id, plain) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    assert_eq!(key["owner"], client.as_str());
    assert_eq!(code(&app, &verifier, plain, &[]).await, "VALID");
    assert_eq!(code(&peer, &verifier, plain, &[]).await, "VALID");

    let res = app.delete_auth(&format!("/v1/admin/clients/{client}"), &admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let disabled = Instant::now();
    assert_eq!(code(&app, &verifier, plain, &[]).await, "REVOKED", "at once where it was disabled");
    await_code(&peer, &verifier, plain, &[], "REVOKED", Duration::from_secs(1).saturating_sub(disabled.elapsed()))
        .await;

    let got: Value = app.get_auth(&format!("/v1/keys/{id}"), &admin).await.json().await.unwrap();
    assert!(got["revoked_at"].is_string(), "{got}");
    assert_eq!(got["revoked_reason"], "owner disabled");
    assert_eq!(got["effective_scopes"], json!([]));
    let events: Value = app.get_auth("/v1/revocations?after=0&limit=1000", &admin).await.json().await.unwrap();
    assert!(events["events"].as_array().unwrap().iter().any(|e| e["kind"] == "api_key" && e["id"] == id), "{events}");
}

#[tokio::test]
async fn a_disabled_owner_refuses_its_keys_even_if_the_key_row_was_not_revoked() {
    // Keys created in a race with the disabling, or before keys were revoked with their client:
    // the owner's state alone refuses them, on an instance that learns it only from the event.
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let (client, secret) = app.create_client(&["client_credentials"], &["keys:write"]).await;
    let token: Value = app.token_for(&client, &secret, None).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let key = created_key(&app, &token, &["deploy"]).await;
    let plain = key["key"].as_str().unwrap();
    assert_eq!(code(&peer, &verifier, plain, &[]).await, "VALID");
    assert_eq!(app.delete_auth(&format!("/v1/admin/clients/{client}"), &admin).await.status(), StatusCode::NO_CONTENT);
    let mut db = app.db().await;
    sqlx::query("UPDATE api_keys SET revoked_at = NULL, revoked_reason = NULL WHERE owner = $1")
        .bind(&client)
        .execute(&mut db)
        .await
        .unwrap();
    await_code(&peer, &verifier, plain, &[], "REVOKED", Duration::from_secs(2)).await;
    // A fresh read from Postgres (another key's first verification) says the same.
    let fresh = spawn_peer_and_verify(&app, &verifier, plain).await;
    assert_eq!(fresh, "REVOKED");
}

/// The code a brand-new instance (empty cache, revocation state loaded at start) answers.
async fn spawn_peer_and_verify(app: &TestApp, verifier: &str, key: &str) -> String {
    let fresh = app.spawn_peer().await;
    code(&fresh, verifier, key, &[]).await
}

#[tokio::test]
async fn keys_created_while_key_scopes_narrow_are_refused_or_narrowed_on_every_instance() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let (token, user) = developer(&app).await;
    // Creations on both instances race one narrowing; each created key is verified on the peer at
    // once, so a record read with the old key_scopes would sit in its cache.
    let creations = (0..16).map(|i| {
        let (target, peer, token) = (if i % 2 == 0 { &app } else { &peer }, &peer, &token);
        async move {
            let res = new_key(target, token, &["deploy", "read"]).await;
            if res.status() != StatusCode::CREATED {
                assert_problem(res, 403, "SCOPE_NOT_ALLOWED").await;
                return None;
            }
            let key: Value = res.json().await.unwrap();
            let secret = key["key"].as_str().unwrap().to_owned();
            code(peer, token, &secret, &["deploy"]).await;
            Some(secret)
        }
    });
    let (path, body) = (format!("/v1/admin/users/{user}"), json!({"key_scopes": ["read"]}));
    let narrowing = patch(&app, &path, &admin, &body);
    let (created, res) = tokio::join!(futures::future::join_all(creations), narrowing);
    assert_eq!(res.status(), StatusCode::OK);
    let done = Instant::now();
    let created: Vec<String> = created.into_iter().flatten().collect();
    for secret in &created {
        let left = Duration::from_secs(1).saturating_sub(done.elapsed()).max(Duration::from_millis(100));
        await_code(&peer, &token, secret, &["deploy"], "INSUFFICIENT_SCOPE", left).await;
        assert_eq!(code(&app, &token, secret, &["deploy"]).await, "INSUFFICIENT_SCOPE");
        assert_eq!(code(&peer, &token, secret, &["read"]).await, "VALID");
    }
}

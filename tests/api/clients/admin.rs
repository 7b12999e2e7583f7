//! Managing clients: deletion, the offline CLI, public clients, ids, the bootstrap admin, redirect
//! URIs and secret rotation.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn deleting_a_client_disables_it_and_its_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["admin"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (id, secret) = (created["client_id"].as_str().unwrap(), created["client_secret"].as_str().unwrap());
    let token: Value = app.token_for(id, secret, None).await.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap();
    assert_eq!(app.get_auth("/v1/admin/clients", token).await.status(), StatusCode::OK);
    assert_eq!(app.delete_auth(&format!("/v1/admin/clients/{id}"), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get_auth("/v1/admin/clients", token).await, 401, "UNAUTHORIZED").await;
    assert_oauth_error(app.token_for(id, secret, None).await, 401, "invalid_client").await;
    let shown: Value = app.get_auth(&format!("/v1/admin/clients/{id}"), &admin).await.json().await.unwrap();
    assert!(shown["disabled_at"].is_string());
    assert_problem(app.delete_auth("/v1/admin/clients/nope", &admin).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn the_cli_creates_a_client_offline_and_prints_it_as_json() {
    let db = fresh_database().await;
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["clients", "create", "--name", "cli-made", "--scopes", "a b", "--grant", "client_credentials"])
        .env("TESSERA_DATABASE_URL", format!("{}/{db}", server_url()))
        .env("TESSERA_MASTER_KEY", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [42u8; 32]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["name"], "cli-made");
    assert_eq!(printed["scopes"], json!(["a", "b"]));
    assert!(printed["client_secret"].as_str().unwrap().len() >= 43);
    let mut builder = TestAppBuilder::new();
    builder.db_name = Some(db.clone());
    let app = builder.spawn().await;
    let res =
        app.token_for(printed["client_id"].as_str().unwrap(), printed["client_secret"].as_str().unwrap(), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(app);
    let mut admin = admin_connection().await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

#[tokio::test]
async fn a_public_client_logs_in_with_its_id_alone_but_may_not_introspect() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "spa", "public": true, "grant_types": ["password", "refresh_token"], "scopes": ["a", "introspect"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let client: Value = res.json().await.unwrap();
    assert!(client.get("client_secret").is_none_or(Value::is_null), "a public client has no secret: {client}");
    let id = client["client_id"].as_str().unwrap().to_owned();
    let res = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": "pub-user", "password": "correct horse battery", "scopes": ["a"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let form = [
        ("grant_type", "password"),
        ("client_id", id.as_str()),
        ("username", "pub-user"),
        ("password", "correct horse battery"),
    ];
    let res = app.http.post(app.url("/oauth/token")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("client_id", id.as_str()), ("refresh_token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "a public client refreshes with its id alone");

    // Introspection needs real client authentication: an id is not a credential.
    let at = tokens["access_token"].as_str().unwrap();
    let res = app
        .http
        .post(app.url("/oauth/introspect"))
        .form(&[("client_id", id.as_str()), ("token", at)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 401, "invalid_client").await;
    // A public client presenting a secret is refused too.
    let res = app.token_for(&id, "made-up", None).await;
    assert_oauth_error(res, 401, "invalid_client").await;
}

/// Client ids are `[A-Za-z0-9._~-]{1,128}`: `:` would break `client_secret_basic` (RFC 6749
/// §2.3.1) in clients that do not form-encode the id. And an id equal to a user's id would let the
/// client's tokens (whose `sub` is the client id) act as that user on their keys.
#[tokio::test]
async fn a_client_id_may_hold_no_colon_and_never_a_users_id() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for bad in ["svc:billing", "a:", ":", &"x".repeat(129)] {
        let res = app
            .post_json(
                "/v1/admin/clients",
                &admin,
                &json!({"client_id": bad, "name": "x", "grant_types": ["client_credentials"], "scopes": []}),
            )
            .await;
        let body = assert_problem(res, 400, "INVALID_REQUEST").await;
        assert!(body["detail"].as_str().unwrap().contains("client_id"), "{body}");
    }
    let ok = "svc.billing_v2~east-1";
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"client_id": ok, "name": "x", "grant_types": ["client_credentials"], "scopes": []}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    let user: Value = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": "ada", "password": "correct horse battery", "scopes": []}),
        )
        .await
        .json()
        .await
        .unwrap();
    let user_id = user["id"].as_str().unwrap();
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"client_id": user_id, "name": "x", "grant_types": ["client_credentials"], "scopes": ["keys:write"]}),
        )
        .await;
    let body = assert_problem(res, 400, "INVALID_REQUEST").await;
    assert!(body["detail"].as_str().unwrap().contains("client_id"), "{body}");
    // Deleted users count too.
    assert_eq!(app.delete_auth(&format!("/v1/admin/users/{user_id}"), &admin).await.status(), StatusCode::NO_CONTENT);
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"client_id": user_id, "name": "x", "grant_types": ["client_credentials"], "scopes": []}),
        )
        .await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
}

/// Disabling `admin` survives a restart with the same bootstrap secret (before, every start
/// re-enabled it); a new secret is the way back.
#[tokio::test]
async fn a_disabled_bootstrap_admin_stays_disabled_until_its_secret_changes() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    assert_eq!(app.delete_auth("/v1/admin/clients/admin", &admin).await.status(), StatusCode::NO_CONTENT);
    assert_oauth_error(app.token_for("admin", ADMIN_SECRET, None).await, 401, "invalid_client").await;

    let mut same = TestAppBuilder::new();
    same.env = app.env.clone();
    same.env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
    same.db_name = Some(app.db_name.clone());
    let restarted = same.spawn().await;
    assert_oauth_error(restarted.token_for("admin", ADMIN_SECRET, None).await, 401, "invalid_client").await;
    restarted.stop().await;

    let new_secret = "a-new-bootstrap-secret-after-the-leak";
    let mut rotated = TestAppBuilder::new().set("TESSERA_BOOTSTRAP_ADMIN_SECRET", new_secret);
    rotated.db_name = Some(app.db_name.clone());
    let rotated = rotated.spawn().await;
    assert_oauth_error(rotated.token_for("admin", ADMIN_SECRET, None).await, 401, "invalid_client").await;
    assert_eq!(rotated.token_for("admin", new_secret, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn redirect_uris_are_validated_normalised_and_editable() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "web", "grant_types": ["password"], "scopes": [],
                    "redirect_uris": ["HTTPS://App.Example.com/cb", "http://127.0.0.1:8400/cb"],
                    "post_logout_redirect_uris": ["https://app.example.com/bye"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let client: Value = res.json().await.unwrap();
    assert_eq!(client["redirect_uris"], json!(["https://app.example.com/cb", "http://127.0.0.1:8400/cb"]));
    assert_eq!(client["post_logout_redirect_uris"], json!(["https://app.example.com/bye"]));
    let id = client["client_id"].as_str().unwrap();

    for (field, bad) in [
        ("redirect_uris", "http://app.example.com/cb"),
        ("redirect_uris", "https://app.example.com/cb#x"),
        ("redirect_uris", "/relative"),
        ("post_logout_redirect_uris", "javascript:alert(1)"),
    ] {
        let res = app
            .post_json(
                "/v1/admin/clients",
                &admin,
                &json!({"name": "web", "grant_types": ["password"], "scopes": [], field: [bad]}),
            )
            .await;
        let body = assert_problem(res, 400, "INVALID_REDIRECT_URI").await;
        assert!(body["detail"].as_str().unwrap().starts_with(field), "{body}");
        let res = app
            .http
            .patch(app.url(&format!("/v1/admin/clients/{id}")))
            .bearer_auth(&admin)
            .json(&json!({field: [bad]}))
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, "INVALID_REDIRECT_URI").await;
    }

    let res = app
        .http
        .patch(app.url(&format!("/v1/admin/clients/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"redirect_uris": ["http://[::1]/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let got: Value = app.get_auth(&format!("/v1/admin/clients/{id}"), &admin).await.json().await.unwrap();
    assert_eq!(got["redirect_uris"], json!(["http://[::1]/cb"]));
    assert_eq!(got["post_logout_redirect_uris"], json!(["https://app.example.com/bye"]), "absent: unchanged");
    // A client registered without any has empty lists.
    let (other, _) = app.create_client(&["client_credentials"], &[]).await;
    let got: Value = app.get_auth(&format!("/v1/admin/clients/{other}"), &admin).await.json().await.unwrap();
    assert_eq!((&got["redirect_uris"], &got["post_logout_redirect_uris"]), (&json!([]), &json!([])));
}

/// A confidential client's secret is replaced: the new one (shown once, no-store) works, the old
/// one no longer does; a public client has none to rotate, an unknown one is 404.
#[tokio::test]
async fn an_admin_rotates_a_clients_secret_and_the_old_one_stops_working() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, old) = app.create_client(&["client_credentials"], &[]).await;
    assert_eq!(app.token_for(&id, &old, None).await.status(), StatusCode::OK);
    let res = app.post_json(&format!("/v1/admin/clients/{id}/secret"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let rotated: Value = res.json().await.unwrap();
    let new = rotated["client_secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["client_id"], id.as_str());
    assert_oauth_error(app.token_for(&id, &old, None).await, 401, "invalid_client").await;
    assert_eq!(app.token_for(&id, new, None).await.status(), StatusCode::OK);
    let audit: Value = app.get_auth("/v1/admin/audit", &admin).await.json().await.unwrap();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "client.secret_rotate" && e["target_id"] == id.as_str()));

    let public: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "spa", "grant_types": ["password"], "scopes": [], "public": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let public_id = public["client_id"].as_str().unwrap();
    assert_problem(
        app.post_json(&format!("/v1/admin/clients/{public_id}/secret"), &admin, &json!({})).await,
        409,
        "CONFLICT",
    )
    .await;
    assert_problem(app.post_json("/v1/admin/clients/nope/secret", &admin, &json!({})).await, 404, "NOT_FOUND").await;
    // The bootstrap admin's secret is the variable's: a rotation here would be undone at the next start.
    let body =
        assert_problem(app.post_json("/v1/admin/clients/admin/secret", &admin, &json!({})).await, 409, "CONFLICT")
            .await;
    assert!(body["detail"].as_str().unwrap().contains("TESSERA_BOOTSTRAP_ADMIN_SECRET"), "{body}");
    assert_eq!(app.token_for("admin", ADMIN_SECRET, None).await.status(), StatusCode::OK);
}

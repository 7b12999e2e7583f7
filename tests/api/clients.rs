//! Clients and the client-credentials grant.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{helpers::*, signing::parts};

#[tokio::test]
async fn a_confidential_client_gets_its_secret_once_stored_only_as_a_keyed_hash() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "billing", "grant_types": ["client_credentials"], "scopes": ["keys:read"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let created: Value = res.json().await.unwrap();
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43, "256-bit secret");
    assert!(uuid::Uuid::parse_str(id).is_ok());

    let one = app.get_auth(&format!("/v1/admin/clients/{id}"), &admin).await.text().await.unwrap();
    let all = app.get_auth("/v1/admin/clients", &admin).await.text().await.unwrap();
    for text in [&one, &all] {
        assert!(!text.contains(secret));
        assert!(!text.contains("argon2") && !text.contains("hmac"));
        assert!(!text.contains("client_secret"));
    }
    let hash: String = sqlx::query_scalar("SELECT secret_hash FROM clients WHERE client_id = $1")
        .bind(id)
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    // A generated secret is high-entropy: a keyed hash, checked without Argon2.
    assert!(hash.starts_with("$tessera-hmac-sha256$v1$"), "{hash}");
    assert!(!hash.contains(secret));
}

#[tokio::test]
async fn client_credentials_issues_an_rfc9068_token_with_the_clients_ttl_and_scopes() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let created: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"client_id": "reporting", "name": "r", "grant_types": ["client_credentials"], "scopes": ["a", "b"],
                    "audience": "https://api.example.com", "access_token_ttl": 120}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    let res = app.token_for("reporting", secret, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 120);
    assert_eq!(body["scope"], "a b");
    assert!(body.get("refresh_token").is_none());
    let (h, c) = parts(body["access_token"].as_str().unwrap());
    assert_eq!(h["typ"], "at+jwt");
    assert_eq!(c["sub"], "reporting");
    assert_eq!(c["client_id"], "reporting");
    assert_eq!(c["aud"], "https://api.example.com");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 120);

    // Narrower scope is fine; wider is invalid_scope.
    let body: Value = app.token_for("reporting", secret, Some("b")).await.json().await.unwrap();
    assert_eq!(body["scope"], "b");
    assert_oauth_error(app.token_for("reporting", secret, Some("a c")).await, 400, "invalid_scope").await;

    // Audience: the configured one or this service; nothing else.
    let form = [("grant_type", "client_credentials"), ("audience", "https://evil.example")];
    let res =
        app.http.post(app.url("/oauth/token")).basic_auth("reporting", Some(secret)).form(&form).send().await.unwrap();
    assert_oauth_error(res, 400, "invalid_request").await;
    let form = [("grant_type", "client_credentials"), ("audience", "http://127.0.0.1:8080")];
    let body: Value = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth("reporting", Some(secret))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(parts(body["access_token"].as_str().unwrap()).1["aud"], "http://127.0.0.1:8080");
}

#[tokio::test]
async fn client_secret_post_works_and_both_methods_at_once_is_invalid_request() {
    let app = spawn_app().await;
    let (id, secret) = app.create_client(&["client_credentials"], &["x"]).await;
    let form = [("grant_type", "client_credentials"), ("client_id", id.as_str()), ("client_secret", secret.as_str())];
    let res = app.http.post(app.url("/oauth/token")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.http.post(app.url("/oauth/token")).basic_auth(&id, Some(&secret)).form(&form).send().await.unwrap();
    assert_oauth_error(res, 400, "invalid_request").await;
}

#[tokio::test]
async fn unknown_client_and_wrong_secret_are_indistinguishable() {
    let app = spawn_app().await;
    let (id, _) = app.create_client(&["client_credentials"], &[]).await;
    let wrong = app.token_for(&id, "not-the-secret", None).await;
    let unknown = app.token_for("no-such-client", "not-the-secret", None).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    for h in ["www-authenticate", "content-type", "cache-control"] {
        assert_eq!(wrong.headers().get(h), unknown.headers().get(h), "{h}");
    }
    assert!(wrong.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(wrong.text().await.unwrap(), unknown.text().await.unwrap());
}

#[tokio::test]
async fn grant_rules_are_enforced() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    // A client not registered for client_credentials.
    let (id, secret) = app.create_client(&["password"], &[]).await;
    assert_oauth_error(app.token_for(&id, &secret, None).await, 400, "unauthorized_client").await;
    // An unknown grant type.
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "implicit")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 400, "unsupported_grant_type").await;
    // A missing grant type.
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("scope", "x")])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 400, "invalid_request").await;
    // A JSON body is not a form.
    let res =
        app.http.post(app.url("/oauth/token")).json(&json!({"grant_type": "client_credentials"})).send().await.unwrap();
    assert_oauth_error(res, 400, "invalid_request").await;
    // A public client cannot be registered for client_credentials.
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "spa", "public": true, "grant_types": ["client_credentials"], "scopes": []}),
        )
        .await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    // Bad registrations.
    for bad in [
        json!({"name": "", "grant_types": ["password"], "scopes": []}),
        json!({"name": "x", "grant_types": [], "scopes": []}),
        json!({"name": "x", "grant_types": ["authorization_code"], "scopes": []}),
        json!({"name": "x", "grant_types": ["password"], "scopes": ["bad scope"]}),
        json!({"name": "x", "grant_types": ["password"], "scopes": [], "access_token_ttl": 0}),
        json!({"name": "x", "client_id": "has space", "grant_types": ["password"], "scopes": []}),
    ] {
        let res = app.post_json("/v1/admin/clients", &admin, &bad).await;
        assert_problem(res, 400, "INVALID_REQUEST").await;
    }
    let dup = json!({"client_id": "same", "name": "x", "grant_types": ["password"], "scopes": []});
    assert_eq!(app.post_json("/v1/admin/clients", &admin, &dup).await.status(), StatusCode::CREATED);
    assert_problem(app.post_json("/v1/admin/clients", &admin, &dup).await, 409, "CONFLICT").await;
}

#[tokio::test]
async fn v1_needs_a_bearer_token_and_the_routes_scope() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/v1/admin/clients")).send().await.unwrap();
    assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_problem(res, 401, "UNAUTHORIZED").await;
    let res = app.http.get(app.url("/v1/admin/clients")).header("authorization", "Basic abc").send().await.unwrap();
    assert_problem(res, 401, "UNAUTHORIZED").await;
    let weak = app.token_with_scopes(&["keys:read"]).await;
    let res = app.get_auth("/v1/admin/clients", &weak).await;
    assert_problem(res, 403, "INSUFFICIENT_SCOPE").await;
    // A token for another audience is not accepted by Tessera's own API.
    let admin = app.admin_token().await;
    let created: Value = app
        .post_json("/v1/admin/clients", &admin, &json!({"name": "x", "grant_types": ["client_credentials"], "scopes": ["admin"], "audience": "https://other"}))
        .await
        .json()
        .await
        .unwrap();
    let other: Value = app
        .token_for(created["client_id"].as_str().unwrap(), created["client_secret"].as_str().unwrap(), None)
        .await
        .json()
        .await
        .unwrap();
    assert_problem(
        app.get_auth("/v1/admin/clients", other["access_token"].as_str().unwrap()).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

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
async fn concurrent_requests_with_a_cold_secret_cache_share_one_argon2_check_and_failures_are_not_cached() {
    let app = spawn_app().await;
    // Generated secrets cost no Argon2 at all; the bootstrap client's operator-chosen one does.
    let (id, secret) = ("admin", ADMIN_SECRET);
    let before = app.parts.clients.secret_checks();

    // 24 concurrent requests with the same, not yet verified, credentials: one Argon2 run between them.
    let requests = (0..24).map(|_| app.token_for(id, secret, None));
    for res in futures::future::join_all(requests).await {
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(app.parts.clients.secret_checks() - before, 1, "one Argon2 verification for 24 requests");

    // Warm: no more Argon2.
    assert_eq!(app.token_for(id, secret, None).await.status(), StatusCode::OK);
    assert_eq!(app.parts.clients.secret_checks() - before, 1);

    // A wrong secret is checked every time (never remembered as a success, nor as a failure).
    for i in 0..3 {
        let res = app.token_for(id, "not-the-secret", None).await;
        assert_oauth_error(res, 401, "invalid_client").await;
        assert_eq!(app.parts.clients.secret_checks() - before, 2 + i);
    }
    // And the right one still works, from the cache.
    assert_eq!(app.token_for(id, secret, None).await.status(), StatusCode::OK);
    assert_eq!(app.parts.clients.secret_checks() - before, 4);
    app.stop().await;
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

/// An unknown client id is remembered for a few seconds like a known one, so a flood of made-up ids
/// costs one query per id and answers as fast as a known client; creating that id on this instance
/// makes it usable at once.
#[tokio::test]
async fn unknown_client_ids_are_cached_like_known_ones_and_creation_clears_them() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let before = app.parts.clients.lookups();
    for _ in 0..10 {
        assert_oauth_error(app.token_for("made-up-id", "some-secret-value", None).await, 401, "invalid_client").await;
    }
    assert_eq!(app.parts.clients.lookups() - before, 1, "one query for ten attempts with one unknown id");
    let created: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"client_id": "made-up-id", "name": "x", "grant_types": ["client_credentials"], "scopes": []}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["client_secret"].as_str().unwrap();
    assert_eq!(app.token_for("made-up-id", secret, None).await.status(), StatusCode::OK);
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

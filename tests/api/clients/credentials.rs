//! Client authentication and the client-credentials grant: secrets, methods, rules, caches.

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
    assert!(hash.starts_with("$tessera-hmac-sha256$v2$"), "{hash}");
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
        json!({"name": "x", "grant_types": ["implicit"], "scopes": []}),
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

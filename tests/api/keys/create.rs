//! Creating keys: shown once, stored only as keyed hashes, owned, scoped and limited.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

#[tokio::test]
async fn a_new_key_is_shown_once_with_no_store_and_never_again_in_get_or_list() {
    let app = spawn_app().await;
    let (token, user) = developer(&app).await;
    let res = app
        .post_json(
            "/v1/keys",
            &token,
            &json!({"name": "ci", "scopes": ["deploy"], "environment": "live", "metadata": {"team": "ops"}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let created: Value = res.json().await.unwrap();
    let key = key_of(&created);
    assert_eq!(key.len(), 47);
    assert!(key.starts_with("tsk_live_"));
    assert!(key[9..].bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(created["start"], &key[..12]);
    for field in [
        "id",
        "key",
        "start",
        "name",
        "scopes",
        "environment",
        "expires_at",
        "allowed_cidrs",
        "metadata",
        "created_at",
        "owner",
    ] {
        assert!(created.get(field).is_some(), "create response lacks {field}: {created}");
    }
    assert_eq!(created["owner"], user.as_str());
    assert_eq!(created["environment"], "live");
    assert_eq!(created["scopes"], json!(["deploy"]));
    assert_eq!(created["expires_at"], Value::Null);
    assert_eq!(created["allowed_cidrs"], json!([]));
    assert_eq!(created["metadata"], json!({"team": "ops"}));

    let test_key = create(&app, &token, json!({"name": "t", "scopes": [], "environment": "test"})).await;
    assert!(key_of(&test_key).starts_with("tsk_test_"));

    let one = app.get_auth(&format!("/v1/keys/{}", id_of(&created)), &token).await;
    assert_eq!(one.status(), StatusCode::OK);
    let one = one.text().await.unwrap();
    let list = app.get_auth("/v1/keys", &token).await;
    assert_eq!(list.status(), StatusCode::OK);
    let list = list.text().await.unwrap();
    for text in [&one, &list] {
        assert!(!text.contains(body_of(key)), "the key leaked: {text}");
        assert!(!text.contains("hash"), "a hash field leaked: {text}");
        assert!(!text.contains("\"key\""), "a key field leaked: {text}");
    }
    let one: Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one["start"], created["start"]);
    assert_eq!(one["name"], "ci");
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_database_and_the_logs_never_hold_a_key_or_its_body() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let first = create(
        &app,
        &token,
        json!({"name": "secret-check", "scopes": ["s"], "environment": "live", "metadata": {"m": 1}, "allowed_cidrs": ["127.0.0.1"]}),
    )
    .await;
    let rotated: Value = rotate(&app, &token, id_of(&first), json!({"grace_period": 60})).await.json().await.unwrap();
    let keys = [key_of(&first).to_owned(), key_of(&rotated).to_owned()];
    for k in &keys {
        assert_eq!(code(&app, &token, json!({"key": k, "scopes": ["s"]})).await, "VALID");
    }
    revoke(&app, &token, id_of(&rotated), json!({"reason": "done"})).await;
    app.parts.usage.flush(&app.parts.db).await.unwrap();

    let mut db = app.db().await;
    // Every text-like and bytea column of api_keys, explicitly, as text and as hex.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'api_keys'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut dump = String::new();
    for (column, ty) in &columns {
        if ["text", "bytea", "ARRAY", "jsonb", "USER-DEFINED", "character varying"].contains(&ty.as_str()) {
            let values: Vec<Option<String>> =
                sqlx::query_scalar(&format!("SELECT {column}::text FROM api_keys")).fetch_all(&mut db).await.unwrap();
            for v in values.into_iter().flatten() {
                dump.push_str(&v);
                dump.push('\n');
            }
        }
    }
    assert!(dump.contains("secret-check"), "the dump read the table");
    // And every row of every table in the database.
    let tables: Vec<String> = sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(&mut db)
        .await
        .unwrap();
    for t in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM {t} t")).fetch_all(&mut db).await.unwrap();
        dump.push_str(&rows.join("\n"));
    }
    // And pg_dump's own view of the whole database.
    let pg_dump = app.pg_dump();
    assert!(pg_dump.contains("secret-check"), "pg_dump holds the key's row");
    dump.push_str(&pg_dump);
    let logs = captured_logs();
    for k in &keys {
        let hex_key = hex::encode(k.as_bytes());
        let hex_body = hex::encode(body_of(k).as_bytes());
        for needle in [k.as_str(), body_of(k), &hex_key, &hex_body] {
            assert!(!dump.contains(needle), "the database holds a key");
            assert!(!logs.contains(needle), "the logs hold a key");
        }
    }
    // The stored hash is HMAC-SHA-256 (32 bytes), version 1.
    let hashes: Vec<(Vec<u8>, i16)> =
        sqlx::query_as("SELECT key_hash, hash_version FROM api_keys").fetch_all(&mut db).await.unwrap();
    assert_eq!(hashes.len(), 2);
    assert!(hashes.iter().all(|(h, v)| h.len() == 32 && *v == 1));
}

#[tokio::test]
async fn another_owners_key_is_not_found_unless_the_caller_is_an_admin() {
    let app = spawn_app().await;
    let (alice, alice_id) = developer(&app).await;
    let (bob, _) = developer(&app).await;
    let key = simple_key(&app, &alice).await;
    let id = id_of(&key);

    assert_problem(app.get_auth(&format!("/v1/keys/{id}"), &bob).await, 404, "NOT_FOUND").await;
    assert_problem(rotate(&app, &bob, id, json!({})).await, 404, "NOT_FOUND").await;
    assert_problem(revoke(&app, &bob, id, json!({})).await, 404, "NOT_FOUND").await;
    assert_problem(app.get_auth(&format!("/v1/keys/{id}/usage"), &bob).await, 404, "NOT_FOUND").await;
    let bobs: Value = app.get_auth("/v1/keys", &bob).await.json().await.unwrap();
    assert_eq!(bobs, json!([]));
    assert_problem(app.get_auth(&format!("/v1/keys?owner={alice_id}"), &bob).await, 403, "FORBIDDEN").await;
    // Bob's failed attempts changed nothing.
    assert_eq!(code(&app, &alice, json!({"key": key_of(&key)})).await, "VALID");

    let admin = app.admin_token().await;
    let seen: Value = app.get_auth(&format!("/v1/keys/{id}"), &admin).await.json().await.unwrap();
    assert_eq!(seen["owner"], alice_id.as_str());
    let listed: Value = app.get_auth(&format!("/v1/keys?owner={alice_id}"), &admin).await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(app.get_auth(&format!("/v1/keys/{id}/usage"), &admin).await.status(), StatusCode::OK);
    assert_eq!(revoke(&app, &admin, id, json!({"reason": "policy"})).await.status(), StatusCode::OK);
    assert_eq!(code(&app, &alice, json!({"key": key_of(&key)})).await, "REVOKED");
}

#[tokio::test]
async fn each_endpoint_needs_its_scope() {
    let app = spawn_app().await;
    let manager = app.token_with_scopes(&["keys:read", "keys:write"]).await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let key = simple_key(&app, &manager).await;

    let res = app.post_json("/v1/keys/verify", &manager, &json!({"key": key_of(&key)})).await;
    assert_problem(res, 403, "INSUFFICIENT_SCOPE").await;
    assert_eq!(code(&app, &verifier, json!({"key": key_of(&key)})).await, "VALID");
    let res = app.post_json("/v1/keys", &verifier, &json!({"name": "x", "scopes": [], "environment": "live"})).await;
    assert_problem(res, 403, "INSUFFICIENT_SCOPE").await;
    assert_problem(app.get_auth("/v1/keys", &verifier).await, 403, "INSUFFICIENT_SCOPE").await;
    assert_problem(revoke(&app, &verifier, id_of(&key), json!({})).await, 403, "INSUFFICIENT_SCOPE").await;
    let res = app.http.post(app.url("/v1/keys/verify")).json(&json!({"key": key_of(&key)})).send().await.unwrap();
    assert!(res.headers().contains_key("www-authenticate"));
    assert_problem(res, 401, "UNAUTHORIZED").await;
    // A client-credentials caller owns keys under its client id.
    let mine: Value = app.get_auth("/v1/keys", &manager).await.json().await.unwrap();
    assert_eq!(mine[0]["id"], key["id"]);
}

#[tokio::test]
async fn every_limit_is_refused_with_a_400_that_names_it() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let base = || json!({"name": "ok", "scopes": [], "environment": "live"});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    let many_scopes: Vec<String> = (0..51).map(|i| format!("s{i}")).collect();
    let many_cidrs: Vec<String> = (0..21).map(|i| format!("10.0.{i}.0/24")).collect();
    let big = "x".repeat(4100);
    for (body, needle) in [
        (with("name", json!("")), "name"),
        (with("name", json!("   ")), "name"),
        (with("name", json!("n".repeat(201))), "name"),
        (with("scopes", json!(many_scopes)), "scopes"),
        (with("scopes", json!(["has space"])), "scopes"),
        (with("scopes", json!(["x".repeat(65)])), "scopes"),
        (with("allowed_cidrs", json!(many_cidrs)), "allowed_cidrs"),
        (with("allowed_cidrs", json!(["10.0.0.0/33"])), "allowed_cidrs"),
        (with("allowed_cidrs", json!(["example.com"])), "allowed_cidrs"),
        (with("metadata", json!([1, 2])), "metadata"),
        (with("metadata", json!("text")), "metadata"),
        (with("metadata", json!({"big": big})), "metadata"),
        (with("expires_in", json!(0)), "expires_in"),
        (with("expires_in", json!(315_360_001)), "expires_in"),
        (with("expires_in", json!(-5)), "expires_in"),
        (with("environment", json!("prod")), "environment"),
        (with("surprise", json!(1)), "surprise"),
        (json!({"scopes": [], "environment": "live"}), "name"),
        (with("name", json!("a\u{0}b")), "name"),
        (with("metadata", json!({"k": ["\u{0}"]})), "metadata"),
    ] {
        let res = app.post_json("/v1/keys", &token, &body).await;
        let problem = assert_problem(res, 400, "INVALID_REQUEST").await;
        assert!(problem["detail"].as_str().unwrap().contains(needle), "{body} -> {problem}");
    }
    // The edges themselves are accepted.
    let edge = json!({"name": "n".repeat(200), "scopes": (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>(),
                      "environment": "live", "expires_in": 315_360_000,
                      "allowed_cidrs": (0..20).map(|i| format!("10.0.{i}.0/24")).collect::<Vec<_>>(),
                      "metadata": {"m": "x".repeat(4000)}});
    let key = create(&app, &token, edge).await;

    let id = id_of(&key);
    for grace in [json!(-1), json!(2_592_001)] {
        let problem =
            assert_problem(rotate(&app, &token, id, json!({"grace_period": grace})).await, 400, "INVALID_REQUEST")
                .await;
        assert!(problem["detail"].as_str().unwrap().contains("grace_period"), "{problem}");
    }
    assert_problem(rotate(&app, &token, id, json!({"grace": 5})).await, 400, "INVALID_REQUEST").await;
    assert_problem(revoke(&app, &token, id, json!({"reason": "r".repeat(501)})).await, 400, "INVALID_REQUEST").await;
    assert_problem(revoke(&app, &token, id, json!({"why": "x"})).await, 400, "INVALID_REQUEST").await;
    assert_problem(revoke(&app, &token, id, json!({"reason": "a\u{0}"})).await, 400, "INVALID_REQUEST").await;
    let admin = app.admin_token().await;
    let nobody: Value = app.get_auth("/v1/keys?owner=%00", &admin).await.json().await.unwrap();
    assert_eq!(nobody, json!([]));
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": key_of(&key), "extra": true})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": key_of(&key), "scopes": ["bad scope"]})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    assert_problem(app.get_auth("/v1/keys/not-a-uuid", &token).await, 400, "INVALID_REQUEST").await;
    assert_problem(app.get_auth(&format!("/v1/keys/{id}/usage?bucket=week"), &token).await, 400, "INVALID_REQUEST")
        .await;
    let res =
        app.get_auth(&format!("/v1/keys/{id}/usage?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z"), &token).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;
    // Nothing was rotated or revoked by the refused requests.
    assert_eq!(code(&app, &token, json!({"key": key_of(&key), "ip": "10.0.3.3"})).await, "VALID");
}

#[tokio::test]
async fn an_owner_at_the_live_key_limit_is_refused_until_a_key_is_revoked() {
    let app = TestAppBuilder::new().set("TESSERA_MAX_KEYS_PER_OWNER", "2").spawn().await;
    let (token, _) = developer(&app).await;
    let first = simple_key(&app, &token).await;
    simple_key(&app, &token).await;
    let res = app.post_json("/v1/keys", &token, &json!({"name": "third", "scopes": [], "environment": "live"})).await;
    let problem = assert_problem(res, 409, "LIMIT_EXCEEDED").await;
    assert!(problem["detail"].as_str().unwrap().contains('2'), "{problem}");
    // Rotation replaces a key, so it is not refused at the limit.
    let second = rotate(&app, &token, id_of(&first), json!({"grace_period": 60})).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    let second: Value = second.json().await.unwrap();
    assert_eq!(revoke(&app, &token, id_of(&second), json!({})).await.status(), StatusCode::OK);
    simple_key(&app, &token).await;
    // Another owner has a limit of their own.
    let (other, _) = developer(&app).await;
    simple_key(&app, &other).await;
}

#[tokio::test]
async fn concurrent_creations_at_the_limit_admit_exactly_the_limit() {
    let app = TestAppBuilder::new().set("TESSERA_MAX_KEYS_PER_OWNER", "3").spawn().await;
    let (token, _) = developer(&app).await;
    let body = json!({"name": "race", "scopes": [], "environment": "test"});
    let attempts = (0..12).map(|_| app.post_json("/v1/keys", &token, &body));
    let statuses: Vec<u16> = futures::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 9, "{statuses:?}");
    let listed: Value = app.get_auth("/v1/keys", &token).await.json().await.unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}

//! API keys: shown once and stored only as keyed hashes, verified in the contract's order from a
//! cache, rotated exactly once with a grace period, revoked everywhere, limited, audited, and
//! counted for usage across instances.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera::apikeys::{ApiKeySecret, Environment};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

/// A developer who logged in with the password grant: (access token, user id).
async fn developer(app: &TestApp) -> (String, String) {
    let login = setup_login(app, &ALL, &ALL).await;
    let res = password_grant(app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_owned(), login.user_id)
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn simple_key(app: &TestApp, token: &str) -> Value {
    create(app, token, json!({"name": "ci", "scopes": ["deploy", "read"], "environment": "live"})).await
}

async fn verify(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The verification code for `key` (`VALID` when valid).
async fn code(app: &TestApp, token: &str, body: Value) -> String {
    let v = verify(app, token, body).await;
    if v["valid"] == true {
        assert!(v.get("code").is_none(), "{v}");
        "VALID".into()
    } else {
        assert_eq!(v.as_object().unwrap().len(), 2, "an invalid answer says only why: {v}");
        v["code"].as_str().unwrap().to_owned()
    }
}

fn key_of(created: &Value) -> &str {
    created["key"].as_str().unwrap()
}

fn id_of(created: &Value) -> &str {
    created["id"].as_str().unwrap()
}

/// The 32 random characters of a key.
fn body_of(key: &str) -> &str {
    &key[9..41]
}

async fn rotate(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/keys/{id}/rotate"), token, &body).await
}

async fn revoke(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/keys/{id}/revoke"), token, &body).await
}

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
async fn a_valid_key_verifies_with_its_owner_name_scopes_environment_expiry_and_metadata() {
    let app = spawn_app().await;
    let (token, user) = developer(&app).await;
    let created = create(
        &app,
        &token,
        json!({"name": "billing", "scopes": ["a", "b"], "environment": "test", "expires_in": 3600, "metadata": {"plan": "pro"}}),
    )
    .await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let v = verify(&app, &verifier, json!({"key": key_of(&created), "scopes": ["b"]})).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["key_id"], created["id"]);
    assert_eq!(v["owner"], user.as_str());
    assert_eq!(v["name"], "billing");
    assert_eq!(v["scopes"], json!(["a", "b"]));
    assert_eq!(v["environment"], "test");
    assert_eq!(v["expires_at"], created["expires_at"]);
    assert!(v["expires_at"].is_string());
    assert_eq!(v["metadata"], json!({"plan": "pro"}));
    assert_eq!(v["rotating"], false);
    // Served again from the cache, identically.
    assert_eq!(verify(&app, &verifier, json!({"key": key_of(&created)})).await, v);
}

#[tokio::test]
async fn each_refusal_has_its_code_and_the_codes_come_in_the_contracts_order() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let check = |key: &str, extra: Value| {
        let mut body = json!({"key": key});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };

    assert_eq!(code(&app, &token, json!({"key": "not a key"})).await, "MALFORMED");
    assert_eq!(code(&app, &token, json!({"key": ""})).await, "MALFORMED");
    let unknown = ApiKeySecret::generate(Environment::Live);
    assert_eq!(code(&app, &token, json!({"key": unknown.expose()})).await, "NOT_FOUND");
    // Remembered as unknown: still NOT_FOUND.
    assert_eq!(code(&app, &token, json!({"key": unknown.expose()})).await, "NOT_FOUND");

    let scoped = simple_key(&app, &token).await;
    assert_eq!(code(&app, &token, check(key_of(&scoped), json!({"scopes": ["deploy"]}))).await, "VALID");
    assert_eq!(
        code(&app, &token, check(key_of(&scoped), json!({"scopes": ["deploy", "admin"]}))).await,
        "INSUFFICIENT_SCOPE"
    );

    // IP_NOT_ALLOWED before INSUFFICIENT_SCOPE.
    let fenced = create(
        &app,
        &token,
        json!({"name": "f", "scopes": [], "environment": "live", "allowed_cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    assert_eq!(
        code(&app, &token, check(key_of(&fenced), json!({"ip": "192.0.2.1", "scopes": ["x"]}))).await,
        "IP_NOT_ALLOWED"
    );
    assert_eq!(
        code(&app, &token, check(key_of(&fenced), json!({"ip": "10.1.2.3", "scopes": ["x"]}))).await,
        "INSUFFICIENT_SCOPE"
    );

    // EXPIRED before IP_NOT_ALLOWED; REVOKED before EXPIRED.
    let short = create(
        &app,
        &token,
        json!({"name": "s", "scopes": [], "environment": "live", "expires_in": 60, "allowed_cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    let short_too =
        create(&app, &token, json!({"name": "s2", "scopes": [], "environment": "live", "expires_in": 60})).await;
    assert_eq!(code(&app, &token, check(key_of(&short), json!({"ip": "10.0.0.1"}))).await, "VALID");
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(code(&app, &token, check(key_of(&short), json!({"ip": "192.0.2.1"}))).await, "EXPIRED");
    assert_eq!(code(&app, &token, json!({"key": key_of(&short_too)})).await, "EXPIRED");
    assert_eq!(revoke(&app, &token, id_of(&short_too), json!({})).await.status(), StatusCode::OK);
    assert_eq!(code(&app, &token, json!({"key": key_of(&short_too)})).await, "REVOKED");
    assert_eq!(revoke(&app, &token, id_of(&scoped), json!({})).await.status(), StatusCode::OK);
    assert_eq!(code(&app, &token, check(key_of(&scoped), json!({"scopes": ["nope"]}))).await, "REVOKED");
}

#[tokio::test]
async fn a_mistyped_checksum_is_malformed_and_cached_keys_verify_while_postgres_is_away() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let key = key_of(&created).to_owned();
    assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");
    // Cached, and still cached a catch-up tick later (nothing drops it while Postgres is up).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let generation = app.parts.apikeys.generation();
    assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");

    // Make Postgres unreachable for this database.
    let mut admin = admin_connection().await;
    sqlx::query(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", app.db_name))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&app.db_name)
        .execute(&mut admin)
        .await
        .unwrap();

    let last = key.chars().last().unwrap();
    let typo = format!("{}{}", &key[..key.len() - 1], if last == 'a' { 'b' } else { 'a' });
    let started = Instant::now();
    assert_eq!(code(&app, &token, json!({"key": typo})).await, "MALFORMED");
    let swapped: String = {
        let mut b = key.clone().into_bytes();
        let i = (9..46).find(|&i| b[i] != b[i + 1]).unwrap();
        b.swap(i, i + 1);
        String::from_utf8(b).unwrap()
    };
    assert_eq!(code(&app, &token, json!({"key": swapped})).await, "MALFORMED");
    assert!(started.elapsed() < Duration::from_secs(2), "MALFORMED must not wait for the database");
    // Long enough for the notification listener to lose its connection and fail to reconnect: the
    // cache must survive that (it is dropped only once a listener is back).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The hot path is memory only: the known key still verifies, and nothing dropped the cache.
    assert_eq!(app.parts.apikeys.generation(), generation, "the API-key cache was dropped while Postgres was away");
    assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");
    // A well-formed key that is not cached needs Postgres: 503 in the problem format, not 500.
    let unknown = ApiKeySecret::generate(Environment::Live);
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": unknown.expose()})).await;
    assert_problem(res, 503, "UNAVAILABLE").await;
    // Under /oauth the same outage is RFC 6749's temporarily_unavailable, not a server_error: a
    // client this instance has not seen must be looked up.
    let res = app.token_for("never-seen-client", "some-secret-value", None).await;
    assert_oauth_error(res, 503, "temporarily_unavailable").await;

    sqlx::query(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", app.db_name))
        .execute(&mut admin)
        .await
        .unwrap();
    // Back: the unknown key is looked up again (and not found), the known one still verifies.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = app.post_json("/v1/keys/verify", &token, &json!({"key": unknown.expose()})).await;
        if res.status() == StatusCode::OK {
            assert_eq!(res.json::<Value>().await.unwrap()["code"], "NOT_FOUND");
            break;
        }
        assert!(Instant::now() < deadline, "the service did not recover after Postgres came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");
}

/// Entries are normalised like source addresses: an IPv4-mapped range is its IPv4 range (before,
/// `::ffff:203.0.113.0/120` was stored as given and matched nothing); an entry with host bits set
/// is refused naming it (before, `203.0.113.5/24` was silently narrowed to its network).
#[tokio::test]
async fn allowed_cidrs_are_normalised_and_entries_with_host_bits_are_refused() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let mapped = create(
        &app,
        &token,
        json!({"name": "mapped", "scopes": [], "environment": "live", "allowed_cidrs": ["::ffff:203.0.113.0/120"]}),
    )
    .await;
    assert_eq!(mapped["allowed_cidrs"], json!(["203.0.113.0/24"]));
    for ip in ["203.0.113.5", "::ffff:203.0.113.5"] {
        assert_eq!(code(&app, &token, json!({"key": key_of(&mapped), "ip": ip})).await, "VALID", "from {ip}");
    }
    assert_eq!(code(&app, &token, json!({"key": key_of(&mapped), "ip": "203.0.114.5"})).await, "IP_NOT_ALLOWED");
    for bad in ["203.0.113.5/24", "::ffff:203.0.113.5/120", "2001:db8::1/32"] {
        let res = app
            .post_json(
                "/v1/keys",
                &token,
                &json!({"name": "x", "scopes": [], "environment": "live", "allowed_cidrs": ["10.0.0.0/8", bad]}),
            )
            .await;
        let body = assert_problem(res, 400, "INVALID_REQUEST").await;
        assert!(body["detail"].as_str().unwrap().contains(bad), "the entry is named: {body}");
    }
}

#[tokio::test]
async fn allowed_cidrs_admit_ipv4_and_ipv6_sources_and_refuse_every_other() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = create(
        &app,
        &token,
        json!({"name": "net", "scopes": [], "environment": "live",
               "allowed_cidrs": ["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]}),
    )
    .await;
    assert_eq!(created["allowed_cidrs"], json!(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7/32"]));
    let key = key_of(&created);
    for (ip, expected) in [
        ("203.0.113.9", "VALID"),
        ("203.0.114.9", "IP_NOT_ALLOWED"),
        ("2001:db8::1", "VALID"),
        ("2001:db8:ffff::1", "VALID"),
        ("2001:db9::1", "IP_NOT_ALLOWED"),
        ("198.51.100.7", "VALID"),
        ("198.51.100.8", "IP_NOT_ALLOWED"),
        ("::ffff:203.0.113.9", "VALID"),
    ] {
        assert_eq!(code(&app, &token, json!({"key": key, "ip": ip})).await, expected, "from {ip}");
    }
    // Without `ip`, the caller's own address (127.0.0.1) is the source.
    assert_eq!(code(&app, &token, json!({"key": key})).await, "IP_NOT_ALLOWED");
    let local = create(
        &app,
        &token,
        json!({"name": "lo", "scopes": [], "environment": "live", "allowed_cidrs": ["127.0.0.0/8", "::1"]}),
    )
    .await;
    assert_eq!(code(&app, &token, json!({"key": key_of(&local)})).await, "VALID");
    // An unreadable address is a bad request, not a refusal, whether or not the key is fenced (it is
    // the source counted for statistics either way), and it is not counted.
    let before = app.parts.usage.pending_verifications();
    for k in [key, key_of(&local), "tsk_live_malformed"] {
        let res = app.post_json("/v1/keys/verify", &token, &json!({"key": k, "ip": "not-an-ip"})).await;
        let body = assert_problem(res, 400, "INVALID_REQUEST").await;
        assert!(body["detail"].as_str().unwrap().contains("ip"), "{body}");
    }
    assert_eq!(app.parts.usage.pending_verifications(), before);
}

#[tokio::test]
async fn a_rotated_key_and_its_successor_both_verify_during_the_grace_and_only_the_successor_after() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let old = create(
        &app,
        &token,
        json!({"name": "svc", "scopes": ["a"], "environment": "test", "expires_in": 7200,
               "allowed_cidrs": ["127.0.0.0/8"], "metadata": {"k": "v"}}),
    )
    .await;
    assert_eq!(code(&app, &token, json!({"key": key_of(&old)})).await, "VALID");

    let res = rotate(&app, &token, id_of(&old), json!({"grace_period": 60})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let new: Value = res.json().await.unwrap();
    assert_eq!(new["rotated_from"], old["id"]);
    assert_ne!(new["id"], old["id"]);
    assert_ne!(new["key"], old["key"]);
    assert!(key_of(&new).starts_with("tsk_test_"));
    for field in ["name", "scopes", "allowed_cidrs", "metadata", "environment", "expires_at", "owner"] {
        assert_eq!(new[field], old[field], "{field} is inherited");
    }
    let old_now: Value = app.get_auth(&format!("/v1/keys/{}", id_of(&old)), &token).await.json().await.unwrap();
    assert_eq!(old_now["rotated_to"], new["id"]);
    assert_ne!(old_now["expires_at"], old["expires_at"], "the grace ends before the old expiry");

    let v = verify(&app, &token, json!({"key": key_of(&old)})).await;
    assert_eq!((v["valid"].clone(), v["rotating"].clone()), (json!(true), json!(true)), "{v}");
    let v = verify(&app, &token, json!({"key": key_of(&new)})).await;
    assert_eq!((v["valid"].clone(), v["rotating"].clone()), (json!(true), json!(false)), "{v}");

    app.clock.advance(Duration::from_secs(61));
    assert_eq!(code(&app, &token, json!({"key": key_of(&old)})).await, "EXPIRED");
    assert_eq!(code(&app, &token, json!({"key": key_of(&new)})).await, "VALID");

    // Rotated once only; and the grace never outlives the key's own expiry.
    assert_problem(rotate(&app, &token, id_of(&old), json!({})).await, 409, "CONFLICT").await;
    let brief = create(&app, &token, json!({"name": "b", "scopes": [], "environment": "live", "expires_in": 30})).await;
    let next: Value = rotate(&app, &token, id_of(&brief), json!({"grace_period": 3600})).await.json().await.unwrap();
    let brief_now: Value = app.get_auth(&format!("/v1/keys/{}", id_of(&brief)), &token).await.json().await.unwrap();
    assert_eq!(brief_now["expires_at"], brief["expires_at"]);
    assert_eq!(next["expires_at"], brief["expires_at"]);
    // A zero grace ends the old key at once.
    let zero = simple_key(&app, &token).await;
    assert_eq!(rotate(&app, &token, id_of(&zero), json!({"grace_period": 0})).await.status(), StatusCode::CREATED);
    assert_eq!(code(&app, &token, json!({"key": key_of(&zero)})).await, "EXPIRED");
    // A revoked key cannot be rotated; an empty body means the default grace.
    let gone = simple_key(&app, &token).await;
    revoke(&app, &token, id_of(&gone), json!({})).await;
    assert_problem(rotate(&app, &token, id_of(&gone), json!({})).await, 409, "CONFLICT").await;
    let fresh = simple_key(&app, &token).await;
    let url = app.url(&format!("/v1/keys/{}/rotate", id_of(&fresh)));
    let res = app.http.post(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let successor: Value = res.json().await.unwrap();
    let url = app.url(&format!("/v1/keys/{}/rotate", id_of(&successor)));
    let res = app.http.post(&url).bearer_auth(&token).header("content-type", "application/json").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "an empty JSON body is the default too");
    let res =
        app.http.post(&url).bearer_auth(&token).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_problem(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn concurrent_rotations_of_one_key_give_exactly_one_new_key() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let peer = app.spawn_peer().await;
    for round in 0..3 {
        let key = simple_key(&app, &token).await;
        let id = id_of(&key).to_owned();
        let attempts = (0..8).map(|i| {
            let target = if i % 2 == 0 { &app } else { &peer };
            rotate(target, &token, &id, json!({"grace_period": 10}))
        });
        let results = futures::future::join_all(attempts).await;
        let mut created = 0;
        for res in results {
            match res.status() {
                StatusCode::CREATED => created += 1,
                _ => {
                    assert_problem(res, 409, "CONFLICT").await;
                }
            }
        }
        assert_eq!(created, 1, "round {round}");
        let mut db = app.db().await;
        let successors: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE rotated_from = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        assert_eq!(successors, 1);
    }
}

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

    loop {
        if code(&peer, &token, json!({"key": key})).await == "REVOKED" {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(3), "the peer still accepts a revoked key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    assert_problem(app.get_auth(&format!("/v1/keys/{id}/usage?bucket=day"), &token).await, 400, "INVALID_REQUEST")
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

#[tokio::test]
async fn usage_adds_up_exactly_across_two_instances_and_a_graceful_stop() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let key = key_of(&created).to_owned();
    let id = id_of(&created).to_owned();

    for _ in 0..3 {
        assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    }
    assert_eq!(
        code(&app, &token, json!({"key": key, "ip": "203.0.113.1", "scopes": ["x"]})).await,
        "INSUFFICIENT_SCOPE"
    );
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": key, "ip": "203.0.113.2"})).await, "VALID");
    }
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": key, "scopes": ["x"]})).await, "INSUFFICIENT_SCOPE");
    }
    // Unknown and malformed keys count against their source.
    let unknown = ApiKeySecret::generate(Environment::Live);
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": unknown.expose(), "ip": "198.51.100.9"})).await, "NOT_FOUND");
    }
    assert_eq!(code(&peer, &token, json!({"key": "tsk_live_nope", "ip": "198.51.100.9"})).await, "MALFORMED");
    // This instance's counts are written now; the peer's must be in Postgres once it has stopped
    // gracefully, whether or not its periodic flush ran in between.
    app.parts.usage.flush(&app.parts.db).await.unwrap();
    peer.stop().await;
    let mut db = app.db().await;
    let (valid, denied): (i64, Value) =
        sqlx::query_as("SELECT sum(valid)::bigint, jsonb_agg(denied) FROM key_usage WHERE key_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(valid, 5, "{denied}");
    let refused: i64 = denied.as_array().unwrap().iter().map(|d| d["INSUFFICIENT_SCOPE"].as_i64().unwrap_or(0)).sum();
    assert_eq!(refused, 3);

    let usage: Value = app.get_auth(&format!("/v1/keys/{id}/usage"), &token).await.json().await.unwrap();
    assert_eq!(usage["totals"], json!({"valid": 5, "denied": {"INSUFFICIENT_SCOPE": 3}}), "{usage}");
    assert_eq!(usage["distinct_ips"], 3, "203.0.113.1, 203.0.113.2 and 127.0.0.1: {usage}");
    assert!(usage["last_used_at"].is_string());
    assert!(["203.0.113.1", "203.0.113.2", "127.0.0.1"].contains(&usage["last_used_ip"].as_str().unwrap()));
    let buckets = usage["buckets"].as_array().unwrap();
    assert!((1..=2).contains(&buckets.len()), "{usage}");
    let sum: i64 = buckets.iter().map(|b| b["valid"].as_i64().unwrap()).sum();
    assert_eq!(sum, 5);
    let hourly: Value = app.get_auth(&format!("/v1/keys/{id}/usage?bucket=hour"), &token).await.json().await.unwrap();
    assert_eq!(hourly["totals"], usage["totals"]);
    assert!(hourly["buckets"][0]["start"].as_str().unwrap().contains(":00:00"), "{hourly}");

    let (count, codes): (i64, Value) = sqlx::query_as(
        "SELECT sum(count)::bigint, jsonb_object_agg(source, codes) FROM source_failures WHERE source = '198.51.100.9'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(count, 3);
    assert_eq!(codes["198.51.100.9"], json!({"NOT_FOUND": 2, "MALFORMED": 1}));
    let (last_at, last_ip): (Option<time::OffsetDateTime>, Option<String>) =
        sqlx::query_as("SELECT last_used_at, last_used_ip FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(last_at.is_some() && last_ip.is_some());
}

#[tokio::test]
async fn usage_buckets_by_minute_or_hour_over_a_range_including_rolled_up_hours() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let id: uuid::Uuid = id_of(&created).parse().unwrap();
    let mut db = app.db().await;
    let hour = time::macros::datetime!(2030-01-01 10:00 UTC);
    for (bucket, start, valid, denied) in [
        ("hour", hour - time::Duration::HOUR, 100, json!({"EXPIRED": 4})),
        ("minute", hour + time::Duration::minutes(1), 5, json!({"EXPIRED": 1})),
        ("minute", hour + time::Duration::minutes(2), 7, json!({"IP_NOT_ALLOWED": 2})),
        ("minute", hour + time::Duration::minutes(61), 3, json!({})),
    ] {
        sqlx::query("INSERT INTO key_usage (key_id, bucket, start, valid, denied) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(bucket)
            .bind(start)
            .bind(valid as i64)
            .bind(denied)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let range = "from=2030-01-01T09:00:00Z&to=2030-01-01T11:30:00Z";
    let hourly: Value =
        app.get_auth(&format!("/v1/keys/{id}/usage?bucket=hour&{range}"), &token).await.json().await.unwrap();
    assert_eq!(
        hourly["buckets"],
        json!([
            {"start": "2030-01-01T09:00:00Z", "valid": 100, "denied": {"EXPIRED": 4}},
            {"start": "2030-01-01T10:00:00Z", "valid": 12, "denied": {"EXPIRED": 1, "IP_NOT_ALLOWED": 2}},
            {"start": "2030-01-01T11:00:00Z", "valid": 3, "denied": {}}
        ])
    );
    assert_eq!(hourly["totals"], json!({"valid": 115, "denied": {"EXPIRED": 5, "IP_NOT_ALLOWED": 2}}));
    let minutes: Value = app
        .get_auth(
            &format!("/v1/keys/{id}/usage?bucket=minute&from=2030-01-01T10:00:30Z&to=2030-01-01T10:02:00Z"),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        minutes["buckets"],
        json!([
            {"start": "2030-01-01T10:01:00Z", "valid": 5, "denied": {"EXPIRED": 1}},
            {"start": "2030-01-01T10:02:00Z", "valid": 7, "denied": {"IP_NOT_ALLOWED": 2}}
        ])
    );
    assert_eq!(minutes["totals"]["valid"], 12);
    assert_eq!(minutes["distinct_ips"], 0);
}

#[tokio::test]
async fn a_rotation_without_grace_is_enforced_at_once_on_another_instance_too() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let old = key_of(&created).to_owned();
    // The peer has the old key cached as valid (its cache would keep it for 30 s).
    assert_eq!(code(&peer, &token, json!({"key": old})).await, "VALID");
    let res = rotate(&app, &token, id_of(&created), json!({"grace_period": 0})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let rotated: Value = res.json().await.unwrap();
    let started = Instant::now();
    while code(&peer, &token, json!({"key": old})).await != "EXPIRED" {
        assert!(started.elapsed() < Duration::from_secs(1), "the peer accepted the rotated key for 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code(&peer, &token, json!({"key": key_of(&rotated)})).await, "VALID");
}

#[tokio::test]
async fn without_a_grace_period_the_old_key_lives_one_more_day() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let old = key_of(&created).to_owned();
    let res = rotate(&app, &token, id_of(&created), json!({})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v = verify(&app, &token, json!({"key": old})).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["rotating"], true);
    // (Fresh verifier tokens: access tokens do not last a day.)
    app.clock.advance(Duration::from_secs(86_400 - 60));
    let checker = app.token_with_scopes(&["keys:verify"]).await;
    assert_eq!(code(&app, &checker, json!({"key": old})).await, "VALID");
    app.clock.advance(Duration::from_secs(61));
    let checker = app.token_with_scopes(&["keys:verify"]).await;
    assert_eq!(code(&app, &checker, json!({"key": old})).await, "EXPIRED");
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
    let started = Instant::now();
    while code(&peer, &checker, json!({"key": key})).await != "REVOKED" {
        assert!(started.elapsed() < Duration::from_secs(2), "the peer still accepts a deleted user's key");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_counting_off_verification_still_works_and_nothing_is_counted() {
    let app = TestAppBuilder::new().set("TESSERA_USAGE_COUNTING", "false").spawn().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    assert_eq!(code(&app, &token, json!({"key": key_of(&created)})).await, "VALID");
    assert_eq!(code(&app, &token, json!({"key": "tsk_live_nope"})).await, "MALFORMED");
    assert_eq!(app.parts.usage.pending_verifications(), 0);
    assert!(!app.parts.usage.has_pending());
}

#[tokio::test]
async fn distinct_ips_counts_only_addresses_seen_within_the_range() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), key_of(&created).to_owned());
    let rfc3339 = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    // 203.0.113.1 before and after the middle minute, 203.0.113.2 only within it.
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    app.clock.advance(Duration::from_secs(120));
    let middle = app.clock.now();
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.2"})).await, "VALID");
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    app.parts.usage.flush(&app.parts.db).await.unwrap();

    let usage_between = |from: time::OffsetDateTime, to: time::OffsetDateTime| {
        let url = format!("/v1/keys/{id}/usage?bucket=minute&from={}&to={}", rfc3339(from), rfc3339(to));
        let (app, token) = (&app, &token);
        async move { app.get_auth(&url, token).await.json::<Value>().await.unwrap() }
    };
    let within = usage_between(middle - time::Duration::minutes(1), middle + time::Duration::minutes(1)).await;
    assert_eq!(within["totals"]["valid"], 1, "{within}");
    assert_eq!(within["distinct_ips"], 1, "only 203.0.113.2 was seen in the range: {within}");
    let all = usage_between(middle - time::Duration::minutes(10), middle + time::Duration::minutes(10)).await;
    assert_eq!(all["totals"]["valid"], 3, "{all}");
    assert_eq!(all["distinct_ips"], 2, "{all}");
}

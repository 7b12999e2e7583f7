//! Importing keys by the SHA-256 of their plaintext (`POST /v1/admin/keys/import`): they verify like
//! keys made here, refusals name `keys[i].field`, the batch is all or nothing, keys from another
//! system verify when foreign formats are on, and a key tried before its import verifies at once
//! on another instance.

use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera::apikeys::{ApiKeySecret, Environment};

use crate::helpers::*;

const IMPORT: &str = "/v1/admin/keys/import";

fn sha256(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref());
    out
}

fn hex_hash(s: &str) -> String {
    hex::encode(sha256(s))
}

fn b64_hash(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(s))
}

/// A client whose keys may carry `read` and `write`; returns its id.
async fn owner(app: &TestApp, admin: &str) -> String {
    let res = app
        .post_json(
            "/v1/admin/clients",
            admin,
            &json!({"name": "legacy", "grant_types": ["client_credentials"], "scopes": [], "key_scopes": ["read", "write"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["client_id"].as_str().unwrap().to_owned()
}

fn entry(hash: &str, owner: &str, name: &str) -> Value {
    json!({"hash": hash, "owner": owner, "name": name, "scopes": ["read"], "environment": "live"})
}

async fn verify(app: &TestApp, token: &str, key: &str) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &json!({"key": key})).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn code(app: &TestApp, token: &str, key: &str) -> String {
    let v = verify(app, token, key).await;
    if v["valid"] == true {
        "VALID".to_owned()
    } else {
        v["code"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn imported_keys_verify_with_their_owner_scopes_and_metadata_and_can_be_revoked_looked_up_and_reported() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let client = owner(&app, &admin).await;
    let keys: Vec<String> = (0..3).map(|_| ApiKeySecret::generate(Environment::Live).expose().to_owned()).collect();
    let body = json!({"keys": [
        {"hash": hex_hash(&keys[0]), "owner": client, "name": "zero", "scopes": ["read", "write"], "environment": "live",
         "metadata": {"legacy_id": "k0"}, "start": &keys[0][..12], "allowed_cidrs": ["127.0.0.0/8"]},
        {"hash": hex_hash(&keys[1]).to_uppercase(), "owner": client, "name": "one", "scopes": ["read"], "environment": "test",
         "rate_limit": {"limit": 100, "window": 60}, "credits": 5, "expires_at": "2036-01-01T00:00:00Z"},
        {"hash": b64_hash(&keys[2]), "owner": client, "name": "two", "scopes": [], "environment": "live"},
    ]});
    let res = app.post_json(IMPORT, &admin, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let out: Value = res.json().await.unwrap();
    assert_eq!(out["imported"], 3);
    let listed = out["keys"].as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|k| k["owner"] == client.as_str() && k["id"].is_string()));
    assert_eq!(listed[0]["start"], &keys[0][..12]);
    assert_eq!(listed[2]["start"], "");

    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let v = verify(&app, &verifier, &keys[0]).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["key_id"], listed[0]["id"]);
    assert_eq!(v["owner"], client.as_str());
    assert_eq!(v["name"], "zero");
    assert_eq!(v["scopes"], json!(["read", "write"]));
    assert_eq!(v["metadata"], json!({"legacy_id": "k0"}));
    let v = verify(&app, &verifier, &keys[1]).await;
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["environment"], "test");
    assert_eq!(v["credits_remaining"], 4, "{v}");
    assert_eq!(v["rate_limit"]["limit"], 100, "{v}");
    assert_eq!(verify(&app, &verifier, &keys[2]).await["valid"], true);

    // Only the keyed hash is stored: never the SHA-256 sent.
    let dump = app.pg_dump();
    assert!(!dump.contains(&hex_hash(&keys[0])), "the plain SHA-256 is stored");

    // The admin look-up by plaintext finds it.
    let res = app.post_json("/v1/admin/keys/lookup", &admin, &json!({"key": keys[2]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], listed[2]["id"]);

    // Revoked: REVOKED at once.
    let id = listed[2]["id"].as_str().unwrap();
    let res = app.post_json(&format!("/v1/keys/{id}/revoke"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(code(&app, &verifier, &keys[2]).await, "REVOKED");

    // A leak report finds it (and, by the default policy, revokes it).
    let res = app.http.post(app.url("/v1/keys/leaks")).json(&json!([{"token": keys[0], "source": "github"}]));
    let labels: Value = res.send().await.unwrap().json().await.unwrap();
    assert_eq!(labels[0]["label"], "true_positive", "{labels}");

    // One audit row for the whole call, with the count.
    let mut db = app.db().await;
    let (n, details): (i64, Value) =
        sqlx::query_as("SELECT count(*) OVER (), details FROM audit_log WHERE action = 'api_key.import'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((n, details["count"].clone()), (1, json!(3)));
    let versions: Vec<i16> = sqlx::query_scalar("SELECT DISTINCT hash_version FROM api_keys WHERE owner = $1")
        .bind(&client)
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(versions, [2]);
}

#[tokio::test]
async fn refusals_name_the_entry_and_the_batch_is_all_or_nothing() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let client = owner(&app, &admin).await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let good = ApiKeySecret::generate(Environment::Live).expose().to_owned();
    let other = ApiKeySecret::generate(Environment::Live).expose().to_owned();
    let ok = entry(&hex_hash(&good), &client, "good");

    let detail = |b: &Value| b["detail"].as_str().unwrap().to_owned();
    let bad_hash = entry("abc", &client, "x");
    let b = assert_problem(
        app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone(), bad_hash]})).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(detail(&b).starts_with("keys[1].hash"), "{b}");

    let mut wide = entry(&hex_hash(&other), &client, "wide");
    wide["scopes"] = json!(["deploy"]);
    let b = assert_problem(
        app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone(), wide]})).await,
        403,
        "SCOPE_NOT_ALLOWED",
    )
    .await;
    assert!(detail(&b).starts_with("keys[1].scopes"), "{b}");

    let nobody = entry(&hex_hash(&other), "no-such-owner", "orphan");
    let b = assert_problem(
        app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone(), nobody]})).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(detail(&b).starts_with("keys[1].owner"), "{b}");

    let mut cidr = entry(&hex_hash(&other), &client, "cidr");
    cidr["allowed_cidrs"] = json!(["10.0.0.1/8"]);
    let b = assert_problem(
        app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone(), cidr]})).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
    assert!(detail(&b).starts_with("keys[1].allowed_cidrs"), "{b}");

    let twice = entry(&b64_hash(&good), &client, "again");
    let b = assert_problem(app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone(), twice]})).await, 409, "CONFLICT")
        .await;
    assert!(detail(&b).starts_with("keys[1].hash"), "{b}");

    // Nothing of the refused batches was stored.
    assert_eq!(code(&app, &verifier, &good).await, "NOT_FOUND");

    let res = app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone()]})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // `good` was remembered as unknown on this instance: the import made it forget that.
    assert_eq!(code(&app, &verifier, &good).await, "VALID");
    let b = assert_problem(app.post_json(IMPORT, &admin, &json!({"keys": [ok.clone()]})).await, 409, "CONFLICT").await;
    assert!(detail(&b).starts_with("keys[0].hash"), "{b}");

    let many: Vec<Value> = (0..1001).map(|i| entry(&hex_hash(&format!("k{i}")), &client, "n")).collect();
    let b = assert_problem(app.post_json(IMPORT, &admin, &json!({"keys": many})).await, 400, "INVALID_REQUEST").await;
    assert!(detail(&b).starts_with("keys:"), "{b}");
    let b = assert_problem(app.post_json(IMPORT, &admin, &json!({"keys": []})).await, 400, "INVALID_REQUEST").await;
    assert!(detail(&b).starts_with("keys:"), "{b}");

    let not_admin = app.token_with_scopes(&["keys:write"]).await;
    let one = entry(&hex_hash(&other), &client, "x");
    assert_problem(app.post_json(IMPORT, &not_admin, &json!({"keys": [one]})).await, 403, "INSUFFICIENT_SCOPE").await;
}

#[tokio::test]
async fn keys_in_another_format_verify_only_when_foreign_formats_are_on() {
    let legacy = "sk_legacy_0123456789abcdefXYZ";
    for (on, expected) in [(true, "VALID"), (false, "MALFORMED")] {
        let app = TestAppBuilder::new().set("TESSERA_API_KEY_FOREIGN_FORMATS", &on.to_string()).spawn().await;
        let admin = app.admin_token().await;
        let client = owner(&app, &admin).await;
        let res = app.post_json(IMPORT, &admin, &json!({"keys": [entry(&hex_hash(legacy), &client, "legacy")]})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let verifier = app.token_with_scopes(&["keys:verify"]).await;
        assert_eq!(code(&app, &verifier, legacy).await, expected, "foreign formats {on}");
        if on {
            assert_eq!(code(&app, &verifier, "sk_legacy_0123456789abcdefXYz").await, "NOT_FOUND");
            assert_eq!(code(&app, &verifier, "short").await, "MALFORMED");
        }
    }
}

#[tokio::test]
async fn a_key_tried_then_imported_verifies_at_once_on_another_instance() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let client = owner(&app, &admin).await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let key = ApiKeySecret::generate(Environment::Live).expose().to_owned();
    // Tried twice on the peer: the second answer comes from its memory of unknown hashes.
    assert_eq!(code(&peer, &verifier, &key).await, "NOT_FOUND");
    assert_eq!(code(&peer, &verifier, &key).await, "NOT_FOUND");
    let res = app.post_json(IMPORT, &admin, &json!({"keys": [entry(&hex_hash(&key), &client, "late")]})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    eventually(Duration::from_secs(1), "the peer verifies the imported key", || async {
        code(&peer, &verifier, &key).await == "VALID"
    })
    .await;
}

#[tokio::test]
async fn tessera_admin_keys_import_sends_a_jsonl_file_in_batches() {
    let app = TestAppBuilder::new().set("TESSERA_MAX_KEYS_PER_OWNER", "1001").spawn().await;
    let admin = app.admin_token().await;
    let client = owner(&app, &admin).await;
    let keys: Vec<String> = (0..1001).map(|_| ApiKeySecret::generate(Environment::Test).expose().to_owned()).collect();
    let dir = std::env::temp_dir().join(format!("tessera-import-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.jsonl");
    let lines: Vec<String> = keys.iter().map(|k| entry(&hex_hash(k), &client, "cli").to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let run = |args: Vec<String>| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("admin")
            .args(args)
            .env("TESSERA_URL", &app.addr)
            .env("TESSERA_CLIENT_ID", "admin")
            .env("TESSERA_CLIENT_SECRET", ADMIN_SECRET)
            .output()
    };
    let args = vec!["keys".into(), "import".into(), "--file".into(), file.display().to_string(), "--json".into()];
    let out = run(args.clone()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer, json!({"imported": 1001, "batches": 2}));
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    assert_eq!(code(&app, &verifier, &keys[1000]).await, "VALID");
    // Again: the first batch conflicts, exit 5 naming the lines.
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lines 1-1000"), "{}", String::from_utf8_lossy(&out.stderr));
    // Past the owner's cap (1001 here): 409 LIMIT_EXCEEDED naming the owner, nothing imported.
    let res = app
        .post_json(IMPORT, &admin, &json!({"keys": [entry(&hex_hash("sk_legacy_one_more"), &client, "over")]}))
        .await;
    let b = assert_problem(res, 409, "LIMIT_EXCEEDED").await;
    assert!(b["detail"].as_str().unwrap().starts_with("keys[0].owner"), "{b}");
    std::fs::remove_dir_all(&dir).ok();
}

//! Replacing the master key and the HMAC secret on a live database: every signing key, API key,
//! refresh token and client secret keeps working through the change, `tessera secrets status`
//! counts what still needs the previous key, and re-sealing moves the signing keys and webhook secrets.

use base64::{engine::general_purpose::STANDARD, Engine};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera::{config::Config, rekey};

use crate::{
    helpers::*,
    tokens::{password_grant, refresh, setup_login},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

/// Another instance on `app`'s database with some variables changed (`None` removes one).
async fn instance_with(app: &TestApp, vars: &[(&str, Option<&str>)]) -> TestApp {
    let mut b = TestAppBuilder::new();
    b.env = app.env.clone();
    b.env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
    for (k, v) in vars {
        match v {
            Some(v) => b.env.insert((*k).into(), (*v).into()),
            None => b.env.remove(*k),
        };
    }
    b.db_name = Some(app.db_name.clone());
    b.spawn().await
}

async fn report(app: &TestApp) -> rekey::Report {
    let keys = tessera::app::derived_keys(&Config::from_map(&app.env).unwrap()).unwrap();
    rekey::report(&app.parts.db, &keys, app.clock.now()).await.unwrap()
}

fn count(r: &rekey::Report, what: &str, version: &str) -> i64 {
    r.counts.iter().filter(|c| c.what == what && c.version == version).map(|c| c.count).sum()
}

async fn verify(app: &TestApp, token: &str, key: &str) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &json!({"key": key})).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn login(app: &TestApp, l: &crate::tokens::Login) -> (String, String) {
    let res = password_grant(app, l, &l.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    (v["access_token"].as_str().unwrap().into(), v["refresh_token"].as_str().unwrap().into())
}

async fn create_key(app: &TestApp, token: &str) -> String {
    let res =
        app.post_json("/v1/keys", token, &json!({"name": "ci", "scopes": ["deploy"], "environment": "live"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.unwrap()["key"].as_str().unwrap().into()
}

async fn introspect_active(app: &TestApp, id: &str, secret: &str, token: &str) -> bool {
    let res = app.http.post(app.url("/oauth/introspect")).basic_auth(id, Some(secret)).form(&[("token", token)]);
    let res = res.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["active"] == true
}

#[tokio::test]
async fn the_master_key_is_replaced_without_downtime_and_resealed() {
    let old = TestAppBuilder::new().set("TESSERA_WEBHOOK_ALLOW_PRIVATE", "true").spawn().await;
    let old_master = old.env["TESSERA_MASTER_KEY"].clone();
    let new_master = STANDARD.encode([7u8; 32]);
    // Under the old master key: a developer with a refresh token, an API key, a verifying client,
    // an introspecting client, and the signing keys (active and next: two sealed private keys).
    let l = setup_login(&old, &ALL, &ALL).await;
    let (access, refresh_token) = login(&old, &l).await;
    let key = create_key(&old, &access).await;
    let verifier = old.token_with_scopes(&["keys:verify"]).await;
    let (intro_id, intro_secret) = old.create_client(&["client_credentials"], &["introspect"]).await;
    let admin = old.admin_token().await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["webhook.test"]});
    assert_eq!(old.post_json("/v1/webhooks", &admin, &hook).await.status(), StatusCode::CREATED);

    // The new master key, the old one as previous: everything made before still works.
    let new = instance_with(
        &old,
        &[("TESSERA_MASTER_KEY", Some(&new_master)), ("TESSERA_MASTER_KEY_PREVIOUS", Some(&old_master))],
    )
    .await;
    let before = report(&new).await;
    assert!(count(&before, "signing_keys", "previous") >= 2, "{before:?}");
    assert_eq!(count(&before, "api_keys", "previous"), 1, "{before:?}");
    assert_eq!(count(&before, "webhook_secrets", "previous"), 1, "{before:?}");
    assert!(before.previous_in_use);
    assert_eq!(verify(&new, &verifier, &key).await["valid"], true, "a key hashed under the old master key");
    let res = refresh(&new, &l, &refresh_token, None).await;
    assert_eq!(res.status(), StatusCode::OK, "a refresh token hashed under the old master key");
    let rotated: Value = res.json().await.unwrap();
    assert!(introspect_active(&new, &intro_id, &intro_secret, &access).await, "old client secret, old signature");
    let fresh = create_key(&new, rotated["access_token"].as_str().unwrap()).await;
    assert_eq!(verify(&new, &verifier, &fresh).await["valid"], true);

    // A verified key moved to the current key; re-sealing moves every signing key.
    let moved = report(&new).await;
    assert_eq!(count(&moved, "api_keys", "previous"), 0, "{moved:?}");
    assert_eq!(count(&moved, "api_keys", "current"), 2, "{moved:?}");
    let keys = tessera::app::derived_keys(&Config::from_map(&new.env).unwrap()).unwrap();
    let mut seen = Vec::new();
    let done = rekey::reseal(&new.parts.db, &keys, |p| seen.push(*p)).await.unwrap();
    let signing = done.iter().find(|d| d.what == "signing_keys").unwrap();
    assert!(signing.resealed >= 2 && signing.unreadable == 0, "{done:?}");
    let hooks = done.iter().find(|d| d.what == "webhook_secrets").unwrap();
    assert_eq!((hooks.resealed, hooks.unreadable), (1, 0), "{done:?}");
    let id_keys = done.iter().find(|d| d.what == "id_token_signing_keys").unwrap();
    assert_eq!((id_keys.resealed, id_keys.unreadable), (2, 0), "the active and next ID-token keys: {done:?}");
    // The earlier version's table is re-sealed too; a database made by this version left it empty.
    let legacy = done.iter().find(|d| d.what == "id_token_keys").unwrap();
    assert_eq!((legacy.total, legacy.unreadable), (0, 0), "{done:?}");
    assert_eq!(seen.len() as u64, done.iter().map(|d| d.total).sum::<u64>(), "progress after every row");
    assert_eq!(count(&report(&new).await, "signing_keys", "previous"), 0);
    old.admin_token().await; // the old instance keeps serving until it is replaced

    // Without the previous key: the signing keys open, tokens signed before still verify, the
    // client secrets made under the old key are what the report said still needed it.
    let after = instance_with(&new, &[("TESSERA_MASTER_KEY_PREVIOUS", None)]).await;
    let remaining = report(&after).await;
    assert_eq!(count(&remaining, "signing_keys", "current"), count(&before, "signing_keys", "previous"));
    assert_eq!(count(&remaining, "webhook_secrets", "current"), 1, "the endpoint's secret opens under the new key");
    assert_eq!(verify(&after, &verifier, &key).await["valid"], true);
    assert_eq!(verify(&after, &verifier, &fresh).await["valid"], true);
    let res = refresh(&after, &l, rotated["refresh_token"].as_str().unwrap(), None);
    let res = res.await;
    // The login client's secret was hashed under the old master-derived key: retired now.
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "report listed it as needing the previous key");
    assert!(count(&before, "client_secrets", "previous") >= 2, "{before:?}");
    let jwks: Value = after.http.get(after.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert!(jwks["keys"].as_array().unwrap().len() >= 2);
    after.stop().await;
    new.stop().await;
    old.stop().await;
}

#[tokio::test]
async fn an_hmac_secret_replaces_the_derived_one_and_old_hashes_keep_verifying() {
    let app = spawn_app().await;
    let l = setup_login(&app, &ALL, &ALL).await;
    let (access, refresh_token) = login(&app, &l).await;
    let key = create_key(&app, &access).await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    let (intro_id, intro_secret) = app.create_client(&["client_credentials"], &["introspect"]).await;

    let secret = "an operator's HMAC secret, at least 32 bytes long";
    let during = instance_with(
        &app,
        &[("TESSERA_HMAC_SECRET", Some(secret)), ("TESSERA_HMAC_SECRET_PREVIOUS", Some("derived"))],
    )
    .await;
    let r = report(&during).await;
    assert_eq!(count(&r, "api_keys", "previous"), 1, "{r:?}");
    assert!(count(&r, "refresh_tokens", "previous") >= 1, "{r:?}");
    assert_eq!(verify(&during, &verifier, &key).await["valid"], true);
    assert!(introspect_active(&during, &intro_id, &intro_secret, &refresh_token).await);
    let res = refresh(&during, &l, &refresh_token, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let successor: Value = res.json().await.unwrap();
    // New hashes are made with the new secret, and the report says so.
    let r = report(&during).await;
    assert_eq!(count(&r, "api_keys", "previous"), 0, "verified keys move: {r:?}");
    assert!(count(&r, "refresh_tokens", "current") >= 1, "{r:?}");
    let (id2, secret2) = during.create_client(&["client_credentials"], &["introspect"]).await;

    // Once the previous secret is removed, what was made under the new one still works, what
    // the report counted under the previous one does not.
    let after = instance_with(&during, &[("TESSERA_HMAC_SECRET_PREVIOUS", None)]).await;
    assert_eq!(verify(&after, &verifier, &key).await["valid"], true, "moved to the new secret when verified");
    assert!(introspect_active(&after, &id2, &secret2, successor["refresh_token"].as_str().unwrap()).await);
    let res = after.http.post(after.url("/oauth/introspect")).basic_auth(&intro_id, Some(&intro_secret));
    let res = res.form(&[("token", "x")]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "a secret hashed under the removed key");
    after.stop().await;
    during.stop().await;
    app.stop().await;
}

#[test]
fn a_short_or_misplaced_hmac_secret_is_refused_at_start() {
    let mut env = TestAppBuilder::new().env;
    env.insert("TESSERA_DATABASE_URL".into(), "postgres://x/y".into());
    env.insert("TESSERA_HMAC_SECRET".into(), "short".into());
    assert!(Config::from_map(&env).unwrap_err().to_string().contains("TESSERA_HMAC_SECRET"));
    env.remove("TESSERA_HMAC_SECRET");
    env.insert("TESSERA_HMAC_SECRET_PREVIOUS".into(), "derived".into());
    assert!(Config::from_map(&env).unwrap_err().to_string().contains("TESSERA_HMAC_SECRET_PREVIOUS"));
    env.insert("TESSERA_HMAC_SECRET_PREVIOUS".into(), "x".repeat(32));
    env.insert("TESSERA_MASTER_KEY_PREVIOUS".into(), "not base64".into());
    assert!(Config::from_map(&env).unwrap_err().to_string().contains("TESSERA_MASTER_KEY_PREVIOUS"));
}

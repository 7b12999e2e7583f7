//! The ID-token keys rotate with the access-token keys: the next one is published before it signs,
//! a retired one stays published (and names its client in a logout hint) while its ID tokens live.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::*;
use crate::signing::parts;

/// The RS256 kids the JWKS publishes (the ID-token keys: the access-token keys are ES256 here).
async fn id_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] == "RS256")
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Signs in through the page and returns the ID token's kid and the token.
async fn id_token(app: &TestApp, s: &Setup) -> (String, String) {
    let (verifier, challenge) = pkce();
    let (_, code) = sign_in_for_code(app, s, &challenge, &[("scope", "openid")]).await;
    let body: Value = exchange(app, s, &code, REDIRECT, &verifier).await.json().await.unwrap();
    let token = body["id_token"].as_str().unwrap().to_owned();
    (parts(&token).0["kid"].as_str().unwrap().to_owned(), token)
}

/// `GET /oauth/logout` with `token` as the hint and the registered post-logout URI: whether the
/// hint was read (the browser is sent back to the client's URI) or not (it stays on Tessera's page).
async fn hint_names_the_client(app: &TestApp, token: &str) -> bool {
    let res = app
        .http
        .get(app.url("/oauth/logout"))
        .query(&[("id_token_hint", token), ("post_logout_redirect_uri", AFTER_LOGOUT)])
        .send()
        .await
        .unwrap();
    match res.status() {
        StatusCode::SEE_OTHER => {
            assert_eq!(res.headers()["location"], AFTER_LOGOUT);
            true
        }
        StatusCode::OK => false,
        other => panic!("logout answered {other}"),
    }
}

#[tokio::test]
async fn id_token_keys_rotate_with_the_access_keys_and_a_retired_one_stays_published_while_its_tokens_live() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let before = id_kids(&app).await;
    assert_eq!(before.len(), 2, "the active ID-token key and the next one: {before:?}");
    let (first, old_token) = id_token(&app, &s).await;
    let next = before.iter().find(|k| **k != first).unwrap().clone();

    // Rotation waits, as ever, until the next keys have been published for the JWKS max-age.
    let admin = app.admin_token().await;
    let res = app.post_json("/v1/admin/signing-keys/rotate", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    app.clock.advance(Duration::from_secs(300));
    let res = app.post_json("/v1/admin/signing-keys/rotate", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);

    // The former next key signs; the retired one is still published, and a new next one is.
    let (signer, _) = id_token(&app, &s).await;
    assert_eq!(signer, next, "the key published before it signed");
    let after = id_kids(&app).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.contains(&first) && after.contains(&next));
    // On another instance too (it reloads the keys from Postgres).
    let peer = app.spawn_peer().await;
    assert_eq!(id_kids(&peer).await.len(), 3);
    assert!(hint_names_the_client(&app, &old_token).await, "a hint of the retired key is still read");

    // Once every ID token the retired key signed has expired, it leaves the JWKS, and its hints
    // are no longer read.
    let outlive = tessera::clients::MAX_CLIENT_ACCESS_TTL + tessera::signing::lifecycle::RETIRE_LEEWAY.as_secs();
    app.clock.advance(Duration::from_secs(outlive + 1));
    app.parts.signing.reload().await.unwrap();
    let later = id_kids(&app).await;
    assert!(!later.contains(&first) && later.contains(&next) && later.len() == 2, "{later:?}");
    assert!(!hint_names_the_client(&app, &old_token).await);
}

#[tokio::test]
async fn a_database_without_a_next_id_token_key_gets_one_and_rotates_only_after_it_was_published() {
    let app = TestAppBuilder::new().set("TESSERA_SIGNING_KEY_ROTATION", "3600").spawn().await;
    let s = setup(&app, &[], &["openid"], true).await;
    // As a database migrated from before ID-token keys rotated: the active key alone.
    let mut db = app.db().await;
    sqlx::query("DELETE FROM id_token_signing_keys WHERE state = 'next'").execute(&mut db).await.unwrap();
    app.parts.signing.reload().await.unwrap();
    let (first, _) = id_token(&app, &s).await;
    assert_eq!(id_kids(&app).await, vec![first.clone()]);

    // The access-token keys are due; the schedule makes the missing next ID-token key instead of
    // rotating to a key nobody could have fetched.
    app.clock.advance(Duration::from_secs(3601));
    assert_eq!(app.parts.signing.rotate_if_due().await.unwrap(), None);
    app.parts.signing.reload().await.unwrap();
    let published = id_kids(&app).await;
    assert_eq!(published.len(), 2, "{published:?}");
    let next = published.iter().find(|k| **k != first).unwrap().clone();
    app.clock.advance(Duration::from_secs(299));
    assert_eq!(app.parts.signing.rotate_if_due().await.unwrap(), None, "published 299 s: not yet");
    app.clock.advance(Duration::from_secs(1));
    assert!(app.parts.signing.rotate_if_due().await.unwrap().is_some(), "due, and the lock was let go at once");
    app.parts.signing.reload().await.unwrap();
    assert_eq!(id_token(&app, &s).await.0, next);
}

#[tokio::test]
async fn upgrading_makes_the_earlier_versions_id_token_key_the_active_one() {
    // A database as the earlier version left it: migrated up to 0016, its ID-token key in
    // `id_token_keys` (two rows, should a race ever have made two: the newest is the one it signed with).
    let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = admin_connection().await;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let mut db = connect(&format!("{}/{name}", server_url())).await;
    let (before, upgrade): (Vec<_>, Vec<_>) = tessera::db::MIGRATOR.iter().partition(|m| m.version < 17);
    for m in before {
        sqlx::raw_sql(&m.sql).execute(&mut db).await.unwrap();
    }
    sqlx::raw_sql(
        "INSERT INTO id_token_keys (kid, private_key_enc, public_jwk, created_at) VALUES
           ('older', '\\x01', '{}', now() - interval '2 days'), ('newer', '\\x02', '{}', now() - interval '1 day')",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let m = upgrade.iter().find(|m| m.version == 17).unwrap();
    sqlx::raw_sql(&m.sql).execute(&mut db).await.unwrap();

    let rows: Vec<(String, String, Vec<u8>, bool)> =
        sqlx::query_as("SELECT kid, state, private_key_enc, activated_at = created_at FROM id_token_signing_keys")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows, vec![("newer".to_owned(), "active".to_owned(), vec![2u8], true)]);
    let legacy: i64 = sqlx::query_scalar("SELECT count(*) FROM id_token_keys").fetch_one(&mut db).await.unwrap();
    assert_eq!(legacy, 2, "left as it was, for instances of the earlier version");
    // One next and one active key at most.
    let dup = sqlx::raw_sql(
        "INSERT INTO id_token_signing_keys (kid, state, private_key_enc, public_jwk, created_at) VALUES ('x', 'active', '\\x03', '{}', now())",
    )
    .execute(&mut db)
    .await;
    assert!(dup.is_err());
    drop(db);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

/// `GET /v1/admin/signing-keys` with `query`, as a list.
async fn listed(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    let res = app.get_auth(&format!("/v1/admin/signing-keys{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap().as_array().unwrap().clone()
}

fn kid_in<'a>(keys: &'a [Value], state: &str) -> &'a str {
    keys.iter().find(|k| k["state"] == state).and_then(|k| k["kid"].as_str()).unwrap()
}

#[tokio::test]
async fn an_id_token_key_is_listed_apart_and_revoked_like_an_access_token_key() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let admin = app.admin_token().await;

    // The default list is the access-token keys, as ever; `?signs=id_token` lists the others.
    let access = listed(&app, &admin, "").await;
    assert_eq!(access.len(), 2, "{access:?}");
    assert!(access.iter().all(|k| k["signs"] == "access_token"), "{access:?}");
    assert_eq!(listed(&app, &admin, "?signs=access_token").await, access);
    let id = listed(&app, &admin, "?signs=id_token").await;
    assert_eq!(id.len(), 2, "{id:?}");
    assert!(id.iter().all(|k| k["signs"] == "id_token" && k["alg"] == "RS256"), "{id:?}");
    let (first, token) = id_token(&app, &s).await;
    assert_eq!(kid_in(&id, "active"), first);
    let next = kid_in(&id, "next").to_owned();
    let res = app.get_auth("/v1/admin/signing-keys?signs=refresh_token", &admin).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;

    let peer = app.spawn_peer().await;
    assert!(hint_names_the_client(&peer, &token).await);

    // Revoked: the answer lists the ID-token keys, the next one active and a new next made; the
    // key leaves the JWKS, and its hints are no longer read, here and on the peer.
    let res = app.post_json(&format!("/v1/admin/signing-keys/{first}/revoke"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let after: Vec<Value> = res.json::<Value>().await.unwrap().as_array().unwrap().clone();
    assert_eq!(after.len(), 3, "{after:?}");
    let revoked = after.iter().find(|k| k["kid"] == first.as_str()).unwrap();
    assert_eq!(revoked["state"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(kid_in(&after, "active"), next);
    assert_ne!(kid_in(&after, "next"), next);
    assert!(!id_kids(&app).await.contains(&first));
    assert!(!hint_names_the_client(&app, &token).await);
    let (peer_ref, gone) = (&peer, first.as_str());
    eventually(Duration::from_secs(10), "the peer drops the revoked ID-token key", || async move {
        !id_kids(peer_ref).await.iter().any(|k| k == gone)
    })
    .await;
    assert!(!hint_names_the_client(&peer, &token).await);
    assert_eq!(id_token(&app, &s).await.0, next, "the former next key signs");

    // The access-token keys did not move; revoking again changes nothing.
    assert_eq!(listed(&app, &admin, "").await, access);
    let res = app.post_json(&format!("/v1/admin/signing-keys/{first}/revoke"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(listed(&app, &admin, "?signs=id_token").await.len(), 3);
    let mut db = app.db().await;
    let signs: String = sqlx::query_scalar(
        "SELECT details->>'signs' FROM audit_log WHERE action = 'signing_key.revoke' AND target_id = $1",
    )
    .bind(&first)
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(signs, "id_token");
}

//! Rotating keys: exactly once, with a grace period, enforced on every instance.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

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
    eventually(Duration::from_secs(1), "the peer refuses the rotated key (EXPIRED)", || async {
        let got = code(&peer, &token, json!({"key": old})).await;
        if got == "EXPIRED" {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;
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

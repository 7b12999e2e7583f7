//! Rotating refresh tokens: one success per token, reuse detection, lifetimes, scope, binding.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{helpers::*, signing::parts};

use super::*;

#[tokio::test]
async fn rotation_returns_a_new_pair_and_spends_the_old_token() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let first: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap();
    let res = refresh(&app, &l, rt1, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(
        parts(first["access_token"].as_str().unwrap()).1["sid"],
        parts(second["access_token"].as_str().unwrap()).1["sid"]
    );
    assert_eq!(introspect(&app, rt1).await, json!({"active": false}));
    let active = introspect(&app, rt2).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "refresh_token");
    assert_eq!(active["sub"], l.user_id.as_str());
    // Every field the contract lists for an active token.
    for field in ["scope", "client_id", "sub", "exp", "iat", "jti", "aud", "iss", "token_type"] {
        assert!(!active[field].is_null(), "{field} missing: {active}");
    }
    let sid = parts(second["access_token"].as_str().unwrap()).1["sid"].as_str().unwrap().to_owned();
    assert_eq!(active["jti"], format!("{sid}.1"), "family and generation");
    assert_eq!(active["aud"], active["iss"], "a refresh token is for this issuer only");
    assert_eq!(active["client_id"], l.client_id.as_str());
}

#[tokio::test]
async fn replaying_a_spent_token_revokes_the_family_and_its_access_tokens() {
    // Strict: with a grace, this replay would be a retry (see refresh_retry.rs).
    let app = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "0").spawn().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let first: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = refresh(&app, &l, &rt1, None).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    let at2 = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&app, &at2).await["active"], true);

    // The replay: invalid_grant, and the newest successor dies with the family.
    assert_oauth_error(refresh(&app, &l, &rt1, None).await, 400, "invalid_grant").await;
    assert_oauth_error(refresh(&app, &l, &rt2, None).await, 400, "invalid_grant").await;
    assert_eq!(introspect(&app, &at2).await, json!({"active": false}));
    assert_eq!(introspect(&app, first["access_token"].as_str().unwrap()).await, json!({"active": false}));

    // An anomaly record and a revocation event were written.
    let mut db = app.db().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE kind = 'REFRESH_TOKEN_REUSE'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let sid = parts(&at2).1["sid"].as_str().unwrap().to_owned();
    let ev: i64 =
        sqlx::query_scalar("SELECT count(*) FROM revocation_events WHERE kind = 'refresh_family' AND subject_id = $1")
            .bind(&sid)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(ev, 1);
    // A fresh login still works.
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn fifty_concurrent_refreshes_over_two_instances_give_exactly_one_success() {
    // Strict: with a grace, every one of them gets the successor (see refresh_retry.rs).
    let a = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "0").spawn().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    for round in 0..5 {
        let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
        let rt = login["refresh_token"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let app_url = if i % 2 == 0 { a.addr.clone() } else { b.addr.clone() };
            let (id, secret, rt) = (l.client_id.clone(), l.secret.clone(), rt.clone());
            let http = a.http.clone();
            tasks.push(tokio::spawn(async move {
                let res = http
                    .post(format!("{app_url}/oauth/token"))
                    .basic_auth(id, Some(secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                (status, res.json::<Value>().await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (StatusCode::OK, body) => winners.push(body),
                (StatusCode::BAD_REQUEST, body) => assert_eq!(body["error"], "invalid_grant", "round {round}"),
                (s, body) => panic!("round {round}: unexpected status {s}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} successes", winners.len());
        // The losers presented a token already spent: that is reuse (the contract's rule, and the
        // BCP's: the server cannot tell a racing client from a thief), so the family is revoked and
        // the winner's new refresh token is refused too. Deliberately strict.
        let next = winners[0]["refresh_token"].as_str().unwrap();
        let res = refresh(&a, &l, next, None).await;
        assert_oauth_error(res, 400, "invalid_grant").await;
    }
}

#[tokio::test]
async fn idle_and_absolute_lifetimes_are_enforced() {
    let app = TestAppBuilder::new()
        .set("TESSERA_REFRESH_TOKEN_IDLE_TTL", "100")
        .set("TESSERA_REFRESH_TOKEN_ABSOLUTE_TTL", "250")
        .spawn()
        .await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    // Idle: unused for longer than 100 s.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(101));
    assert_oauth_error(refresh(&app, &l, login["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
        .await;

    // Absolute: rotating every 90 s keeps it alive only until 250 s after login.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let mut rt = login["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        app.clock.advance(Duration::from_secs(90));
        let res = refresh(&app, &l, &rt, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        rt = res.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(Duration::from_secs(90));
    assert_oauth_error(refresh(&app, &l, &rt, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a", "b", "c"], &["a", "b", "c"]).await;
    let login: Value = password_grant(&app, &l, &l.password, Some("a b")).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    // Widening is refused and does not spend the token.
    assert_oauth_error(refresh(&app, &l, rt, Some("a c")).await, 400, "invalid_scope").await;
    let narrowed: Value = refresh(&app, &l, rt, Some("a")).await.json().await.unwrap();
    assert_eq!(narrowed["scope"], "a");
    // The successor keeps the original scope.
    let again: Value = refresh(&app, &l, narrowed["refresh_token"].as_str().unwrap(), None).await.json().await.unwrap();
    assert_eq!(again["scope"], "a b");
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    let (other, other_secret) = app.create_client(&["password", "refresh_token"], &["a"]).await;
    let thief = Login {
        client_id: other,
        secret: other_secret,
        user_id: String::new(),
        username: String::new(),
        password: String::new(),
    };
    assert_oauth_error(refresh(&app, &thief, rt, None).await, 400, "invalid_grant").await;
    // The rightful client can still use it.
    assert_eq!(refresh(&app, &l, rt, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_clients_own_refresh_token_ttl_replaces_the_idle_default() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": "ttl-user", "password": "correct horse battery", "scopes": ["a"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "short", "grant_types": ["password", "refresh_token"], "scopes": ["a"], "refresh_token_ttl": 120}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let c: Value = res.json().await.unwrap();
    let l = Login {
        client_id: c["client_id"].as_str().unwrap().into(),
        secret: c["client_secret"].as_str().unwrap().into(),
        user_id: String::new(),
        username: "ttl-user".into(),
        password: "correct horse battery".into(),
    };
    // Within 120 s of its issue a refresh token rotates; unused for longer, it is dead, although the
    // service-wide idle lifetime (14 days) is far from over.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(110));
    let res = refresh(&app, &l, login["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    app.clock.advance(Duration::from_secs(121));
    assert_oauth_error(refresh(&app, &l, rotated["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
        .await;
}

#[tokio::test]
async fn deleting_a_client_ends_its_refresh_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&app, rt).await["active"], true);
    let res = app.delete_auth(&format!("/v1/admin/clients/{}", l.client_id), &admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(introspect(&app, rt).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["access_token"].as_str().unwrap()).await, json!({"active": false}));
    let res = refresh(&app, &l, rt, None).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let mut db = app.db().await;
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_families WHERE client_id = $1 AND revoked_at IS NULL")
            .bind(&l.client_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn a_client_without_the_refresh_token_grant_gets_no_refresh_token_and_cannot_refresh() {
    let app = spawn_app().await;
    let with_refresh = setup_login(&app, &["a"], &["a"]).await;
    let first = password_grant(&app, &with_refresh, &with_refresh.password, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let refresh_token = first["refresh_token"].as_str().expect("a refresh token for a refresh_token client").to_owned();

    // The same user through a client registered for the password grant only.
    let (client_id, secret) = app.create_client(&["password"], &["a"]).await;
    let password_only = Login { client_id, secret, ..with_refresh };
    let res = password_grant(&app, &password_only, &password_only.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none(), "{body}");
    // It may not use the refresh_token grant, whatever token it presents.
    let res = refresh(&app, &password_only, &refresh_token, None).await;
    assert_oauth_error(res, 400, "unauthorized_client").await;
}

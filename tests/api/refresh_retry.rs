//! Retry, not reuse: a refresh whose answer was lost can be retried within
//! `TESSERA_REFRESH_RETRY_GRACE` and gets the same successor; everything else is still reuse.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    signing::parts,
    tokens::{password_grant, refresh, setup_login, Login},
};

/// `n` concurrent refreshes of `token`, alternating between the instances in `apps`.
async fn concurrent_refreshes(apps: &[&TestApp], l: &Login, token: &str, n: usize) -> Vec<(StatusCode, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = apps[i % apps.len()].url("/oauth/token");
        let (id, secret, rt, http) = (l.client_id.clone(), l.secret.clone(), token.to_owned(), apps[0].http.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
                .send()
                .await
                .unwrap();
            let status = res.status();
            (status, res.json::<Value>().await.unwrap())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    let res = app.http.post(app.url("/oauth/introspect")).basic_auth(&id, Some(&secret)).form(&[("token", token)]);
    res.send().await.unwrap().json().await.unwrap()
}

async fn family_revoked(app: &TestApp, sid: &str) -> bool {
    let mut db = app.db().await;
    sqlx::query_scalar("SELECT revoked_at IS NOT NULL FROM refresh_families WHERE id = $1::uuid")
        .bind(sid)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn reuse_anomalies(app: &TestApp) -> i64 {
    let mut db = app.db().await;
    sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE kind = 'REFRESH_TOKEN_REUSE'")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

fn sid_of(body: &Value) -> String {
    parts(body["access_token"].as_str().unwrap()).1["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_retry_on_the_other_instance_gets_the_same_successor_and_a_new_access_token() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a", "b"], &["a", "b"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();

    let first = refresh(&a, &l, rt, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    // The answer was "lost": the client retries on the other instance.
    let retry = refresh(&b, &l, rt, None).await;
    assert_eq!(retry.status(), StatusCode::OK, "a retry within the grace is answered");
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["refresh_token"], first["refresh_token"], "the same successor");
    assert_ne!(retry["access_token"], first["access_token"], "a new access token");
    assert_eq!(retry["scope"], first["scope"]);
    assert_eq!(sid_of(&retry), sid_of(&login), "for the same grant: the same family");
    let claims = parts(retry["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["sub"], l.user_id.as_str());
    assert_eq!(introspect(&b, retry["access_token"].as_str().unwrap()).await["active"], true);

    // Nothing was revoked, no anomaly; the successor refreshes normally.
    assert!(!family_revoked(&a, &sid_of(&login)).await);
    assert_eq!(reuse_anomalies(&a).await, 0);
    let next = refresh(&a, &l, retry["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(next.status(), StatusCode::OK);
    // One rotation happened per token: generations 0, 1 and 2, and the retry counted on the first.
    let mut db = a.db().await;
    let rows: Vec<(i32, i32)> =
        sqlx::query_as("SELECT generation, retries FROM refresh_tokens WHERE family_id = $1::uuid ORDER BY generation")
            .bind(sid_of(&login))
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows, vec![(0, 1), (1, 0), (2, 0)]);
}

#[tokio::test]
async fn sixteen_concurrent_refreshes_over_two_instances_all_get_the_one_successor() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    for round in 0..3 {
        let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
        let rt = login["refresh_token"].as_str().unwrap();
        let answers = concurrent_refreshes(&[&a, &b], &l, rt, 16).await;
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::OK, "round {round}: {body}");
        }
        let successors: std::collections::HashSet<&str> =
            answers.iter().map(|(_, b)| b["refresh_token"].as_str().unwrap()).collect();
        assert_eq!(successors.len(), 1, "round {round}: one successor for all");
        let access: std::collections::HashSet<&str> =
            answers.iter().map(|(_, b)| b["access_token"].as_str().unwrap()).collect();
        assert_eq!(access.len(), 16, "round {round}: each answer has its own access token");
        assert!(!family_revoked(&a, &sid_of(&login)).await, "round {round}");
        // The successor then refreshes normally, on either instance.
        let succ = successors.into_iter().next().unwrap();
        assert_eq!(refresh(&b, &l, succ, None).await.status(), StatusCode::OK, "round {round}");
    }
    assert_eq!(reuse_anomalies(&a).await, 0);
}

#[tokio::test]
async fn sixty_four_concurrent_retries_of_one_token_give_no_error_and_no_deadlock() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    let first: Value = refresh(&a, &l, rt, None).await.json().await.unwrap();
    let answers = tokio::time::timeout(Duration::from_secs(60), concurrent_refreshes(&[&a, &b], &l, rt, 64))
        .await
        .expect("64 retries answered within a minute");
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["refresh_token"], first["refresh_token"]);
    }
}

#[tokio::test]
async fn a_replay_after_the_successor_was_used_is_reuse() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt1 = login["refresh_token"].as_str().unwrap();
    let second: Value = refresh(&app, &l, rt1, None).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap();
    let third = refresh(&app, &l, rt2, None).await;
    assert_eq!(third.status(), StatusCode::OK);
    let third: Value = third.json().await.unwrap();

    // Within the grace, but the successor was presented: reuse.
    assert_oauth_error(refresh(&app, &l, rt1, None).await, 400, "invalid_grant").await;
    assert!(family_revoked(&app, &sid_of(&login)).await);
    assert_eq!(reuse_anomalies(&app).await, 1);
    assert_oauth_error(refresh(&app, &l, third["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
        .await;
    assert_eq!(introspect(&app, third["access_token"].as_str().unwrap()).await, json!({"active": false}));
}

#[tokio::test]
async fn a_replay_after_the_grace_is_reuse_on_every_instance() {
    let a = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "5").spawn().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&a, &l, rt, None).await.status(), StatusCode::OK);
    // Within 5 s a retry is answered; 6 s later it is reuse.
    assert_eq!(refresh(&b, &l, rt, None).await.status(), StatusCode::OK);
    a.clock.advance(Duration::from_secs(6));
    b.clock.advance(Duration::from_secs(6));
    assert_oauth_error(refresh(&b, &l, rt, None).await, 400, "invalid_grant").await;
    assert!(family_revoked(&a, &sid_of(&login)).await);
    assert_eq!(reuse_anomalies(&a).await, 1);
}

#[tokio::test]
async fn a_retry_by_another_client_or_with_another_scope_is_not_answered() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a", "b"], &["a", "b"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&app, &l, rt, Some("b a")).await.status(), StatusCode::OK);

    // Another client holding the token: refused, and the family is left alone.
    let (other_id, other_secret) = app.create_client(&["password", "refresh_token"], &["a", "b"]).await;
    let other = Login { client_id: other_id, secret: other_secret, ..clone_login(&l) };
    assert_oauth_error(refresh(&app, &other, rt, Some("b a")).await, 400, "invalid_grant").await;
    assert!(!family_revoked(&app, &sid_of(&login)).await);

    // The same scope in another order is the same request.
    let retry = refresh(&app, &l, rt, Some("a b")).await;
    assert_eq!(retry.status(), StatusCode::OK);

    // Another scope is not a retry of that request: reuse.
    assert_oauth_error(refresh(&app, &l, rt, Some("a")).await, 400, "invalid_grant").await;
    assert!(family_revoked(&app, &sid_of(&login)).await);
}

#[tokio::test]
async fn with_the_grace_at_zero_exactly_one_of_concurrent_refreshes_succeeds() {
    let a = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "0").spawn().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    let answers = concurrent_refreshes(&[&a, &b], &l, rt, 16).await;
    let winners: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(winners.len(), 1);
    for (status, body) in &answers {
        assert!(*status == StatusCode::OK || (*status == StatusCode::BAD_REQUEST && body["error"] == "invalid_grant"));
    }
    // The losers were reuse: the family, the winner's successor with it, is revoked.
    assert!(family_revoked(&a, &sid_of(&login)).await);
    assert_oauth_error(
        refresh(&a, &l, winners[0]["refresh_token"].as_str().unwrap(), None).await,
        400,
        "invalid_grant",
    )
    .await;
}

#[tokio::test]
async fn the_retry_grace_is_configured_within_zero_to_sixty_seconds() {
    for bad in ["61", "-1", "ten"] {
        let env = std::collections::HashMap::from([
            ("TESSERA_DATABASE_URL".to_owned(), "postgres://127.0.0.1:1/x".to_owned()),
            ("TESSERA_REFRESH_RETRY_GRACE".to_owned(), bad.to_owned()),
        ]);
        let err = tessera::Config::from_map(&env).expect_err(bad).to_string();
        assert!(err.contains("TESSERA_REFRESH_RETRY_GRACE"), "{err}");
    }
}

fn clone_login(l: &Login) -> Login {
    Login {
        client_id: l.client_id.clone(),
        secret: l.secret.clone(),
        user_id: l.user_id.clone(),
        username: l.username.clone(),
        password: l.password.clone(),
    }
}

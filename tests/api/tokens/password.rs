//! The password grant and the users it signs in.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{helpers::*, signing::parts};

use super::*;

#[tokio::test]
async fn the_password_grant_returns_an_access_token_for_the_user_and_a_refresh_token() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["keys:read", "keys:write"], &["keys:read", "keys:write", "other"]).await;
    let res = password_grant(&app, &l, &l.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "keys:read keys:write", "user ∩ client scopes");
    let rt = body["refresh_token"].as_str().unwrap();
    assert!(rt.starts_with("tsr_") && rt.len() >= 4 + 43);
    let (_, claims) = parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], l.user_id.as_str());
    assert_eq!(claims["client_id"], l.client_id.as_str());
    assert!(claims["sid"].is_string(), "access tokens carry their family id");
    // The refresh token is stored only as a keyed hash.
    let mut db = app.db().await;
    let dump: Vec<String> =
        sqlx::query_scalar("SELECT encode(token_hash, 'escape') FROM refresh_tokens").fetch_all(&mut db).await.unwrap();
    assert!(dump.iter().all(|d| !d.contains(&rt[4..])));
    // Nowhere in the database: not the refresh token, not the password, not the client secret.
    let pg_dump = app.pg_dump();
    assert!(pg_dump.contains(&l.user_id), "pg_dump holds the user");
    for secret in [&rt[4..], l.password.as_str(), l.secret.as_str()] {
        assert!(!pg_dump.contains(secret) && !pg_dump.contains(&hex::encode(secret.as_bytes())));
    }
    // A wider scope than allowed is refused.
    assert_oauth_error(password_grant(&app, &l, &l.password, Some("other")).await, 400, "invalid_scope").await;
}

#[tokio::test]
async fn wrong_password_unknown_user_and_locked_account_answer_the_same() {
    let app = TestAppBuilder::new().set("TESSERA_LOGIN_MAX_FAILURES", "3").spawn().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let wrong = password_grant(&app, &l, "wrong password", None).await;
    let ghost = Login { username: "nobody-here".into(), ..setup_login(&app, &["a"], &["a"]).await };
    let unknown = password_grant(&app, &ghost, "whatever pw", None).await;
    let wrong_body = assert_oauth_error(wrong, 400, "invalid_grant").await;
    let unknown_body = assert_oauth_error(unknown, 400, "invalid_grant").await;
    assert_eq!(wrong_body, unknown_body);
    // Two more failures lock the account: even the right password is refused, identically.
    for _ in 0..2 {
        password_grant(&app, &l, "wrong password", None).await;
    }
    let locked = assert_oauth_error(password_grant(&app, &l, &l.password, None).await, 400, "invalid_grant").await;
    assert_eq!(locked, wrong_body);
    // After the lockout the right password works again.
    app.clock.advance(Duration::from_secs(901));
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn users_are_managed_by_admins_and_deleting_one_revokes_their_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let got: Value = app.get_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await.json().await.unwrap();
    assert_eq!(got["username"], l.username.as_str());
    assert!(got["created_at"].is_string());
    let dup = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": l.username.to_uppercase(), "password": "another password"}),
        )
        .await;
    assert_problem(dup, 409, "CONFLICT").await;
    for bad in [
        json!({"username": "x", "password": "short"}),
        json!({"username": "", "password": "long enough pw"}),
        json!({"username": "x y", "password": "long enough pw"}),
        json!({"username": "x", "password": "long enough pw", "scopes": ["no spaces allowed"]}),
    ] {
        assert_problem(app.post_json("/v1/admin/users", &admin, &bad).await, 400, "INVALID_REQUEST").await;
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1::uuid")
        .bind(&l.user_id)
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&l.password));

    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    assert_eq!(
        app.delete_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(introspect(&app, login["refresh_token"].as_str().unwrap()).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["access_token"].as_str().unwrap()).await, json!({"active": false}));
    assert_problem(app.get_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await, 404, "NOT_FOUND").await;
    assert_problem(app.get_auth("/v1/admin/users/not-a-uuid", &admin).await, 400, "INVALID_REQUEST").await;
    assert_oauth_error(password_grant(&app, &l, &l.password, None).await, 400, "invalid_grant").await;
}

/// The password grant is legacy (RFC 9700 §2.4): its use is logged as a warning naming the client.
#[tokio::test]
async fn a_password_grant_is_logged_as_legacy_naming_its_client() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("WARN") && line.contains("legacy") && line.contains(&l.client_id)),
        "no legacy warning for client {}",
        l.client_id
    );
}

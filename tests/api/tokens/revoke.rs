//! Token revocation (RFC 7009), introspection, and bearer checks across instances.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family_and_an_access_token_its_jti() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let (rt, at) = (login["refresh_token"].as_str().unwrap(), login["access_token"].as_str().unwrap());
    let revoke = |token: String, id: String, secret: String| {
        let http = app.http.clone();
        let url = app.url("/oauth/revoke");
        async move { http.post(url).basic_auth(id, Some(secret)).form(&[("token", token.as_str())]).send().await.unwrap() }
    };
    // Another client cannot revoke it (200, but nothing happens).
    let (other, other_secret) = app.create_client(&["client_credentials"], &[]).await;
    let res = revoke(rt.to_owned(), other.clone(), other_secret.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(introspect(&app, rt).await["active"], true);
    // Unknown tokens: still 200.
    assert_eq!(revoke("garbage".into(), other, other_secret).await.status(), StatusCode::OK);

    // The owner revokes the refresh token: family and its access tokens die.
    assert_eq!(revoke(rt.to_owned(), l.client_id.clone(), l.secret.clone()).await.status(), StatusCode::OK);
    assert_eq!(introspect(&app, rt).await, json!({"active": false}));
    assert_eq!(introspect(&app, at).await, json!({"active": false}));
    assert_oauth_error(refresh(&app, &l, rt, None).await, 400, "invalid_grant").await;

    // An access token alone: its jti is revoked until it expires.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let at = login["access_token"].as_str().unwrap();
    assert_eq!(revoke(at.to_owned(), l.client_id.clone(), l.secret.clone()).await.status(), StatusCode::OK);
    assert_eq!(introspect(&app, at).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["refresh_token"].as_str().unwrap()).await["active"], true, "only the jti");
    // Unauthenticated revocation is refused.
    let res = app.http.post(app.url("/oauth/revoke")).form(&[("token", at)]).send().await.unwrap();
    assert_oauth_error(res, 401, "invalid_client").await;
}

#[tokio::test]
async fn introspection_needs_the_introspect_scope_and_reports_active_tokens_fully() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, secret) = app.create_client(&["client_credentials"], &["x"]).await;
    let res = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 403, "insufficient_scope").await;
    let body = introspect(&app, &admin).await;
    assert_eq!(body["active"], true);
    for k in ["scope", "client_id", "sub", "exp", "iat", "jti", "aud", "iss", "token_type"] {
        assert!(!body[k].is_null(), "{k} missing: {body}");
    }
    assert_eq!(body["client_id"], "admin");
    assert_eq!(introspect(&app, "not-a-token").await, json!({"active": false}));
    assert_eq!(introspect(&app, "tsr_00000000000000000000000000000000000000000000").await, json!({"active": false}));
    // Expired: the clock moves past exp.
    app.clock.advance(Duration::from_secs(601));
    assert_eq!(introspect(&app, &admin).await, json!({"active": false}));
}

#[tokio::test]
async fn bearer_checks_refuse_revoked_jtis_and_families_across_instances() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["keys:read"], &["keys:read"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let at = login["access_token"].as_str().unwrap();
    assert_eq!(b.get_auth("/v1/admin/clients", at).await.status(), StatusCode::FORBIDDEN, "valid but not admin");
    a.http
        .post(a.url("/oauth/revoke"))
        .basic_auth(&l.client_id, Some(&l.secret))
        .form(&[("token", login["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(a.get_auth("/v1/admin/clients", at).await.status(), StatusCode::UNAUTHORIZED);
    eventually(Duration::from_secs(3), "instance b refuses a token of a revoked family", || async {
        b.get_auth("/v1/admin/clients", at).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

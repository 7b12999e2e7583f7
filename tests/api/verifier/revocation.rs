//! Revocations made at Tessera are refused by the resource service within a second.

use std::time::Instant;

use super::*;

async fn refused_within(s: &Setup, credential: &str, what: &str) {
    let started = Instant::now();
    eventually(WITHIN, what, || async { s.status(credential).await == 401 }).await;
    eprintln!("{what}: refused after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_token_revoked_at_tessera_is_refused_within_a_second_as_are_its_family_and_client() {
    let s = Setup::new().await;
    let (token, id, secret) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    s.revoke_token(&token, &id, &secret).await;
    refused_within(&s, &token, "a revoked access token").await;
    assert_refused(s.hello(&token).await, 401, Some("invalid_token")).await;

    // A sign-in: revoking its refresh token ends its family (the tokens' `sid`).
    let login = setup_login(&s.app, &["hello:read"], &["hello:read"]).await;
    let body: Value = password_grant(&s.app, &login, &login.password, None).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(s.status(access).await, 200);
    s.revoke_token(body["refresh_token"].as_str().unwrap(), &login.client_id, &login.secret).await;
    refused_within(&s, access, "a token of a revoked family").await;

    // A disabled client: every token it holds.
    let (token, id, _) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    let admin = s.app.admin_token().await;
    let res = s.app.delete_auth(&format!("/v1/admin/clients/{id}"), &admin).await;
    assert!(res.status().is_success(), "{}", res.status());
    refused_within(&s, &token, "a token of a disabled client").await;
}

#[tokio::test]
async fn a_revoked_api_key_is_refused_within_a_second_though_its_answer_was_cached() {
    let s = Setup::with(|b| b.api_key_cache_ttl(Duration::from_secs(10))).await;
    let (key, id, owner) = s.api_key(&["hello:read"]).await;
    assert_eq!(s.status(&key).await, 200);
    assert_eq!(s.status(&key).await, 200);
    let res = s.app.post_json(&format!("/v1/keys/{id}/revoke"), &owner, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    refused_within(&s, &key, "a revoked API key").await;
}

#[tokio::test]
async fn tokens_of_a_revoked_signing_key_or_a_deleted_user_are_refused_within_a_second() {
    let s = Setup::new().await;
    let admin = s.app.admin_token().await;

    let login = setup_login(&s.app, &["hello:read"], &["hello:read"]).await;
    let body: Value = password_grant(&s.app, &login, &login.password, None).await.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.status(&access).await, 200);
    let res = s.app.delete_auth(&format!("/v1/admin/users/{}", login.user_id), &admin).await;
    assert!(res.status().is_success(), "{}", res.status());
    refused_within(&s, &access, "a token of a deleted user").await;

    let (token, _, _) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    let kid = {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        header["kid"].as_str().unwrap().to_owned()
    };
    let res = s.app.post_json(&format!("/v1/admin/signing-keys/{kid}/revoke"), &admin, &json!({})).await;
    assert!(res.status().is_success(), "{}", res.status());
    refused_within(&s, &token, "a token of a revoked signing key").await;
}

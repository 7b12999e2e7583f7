//! Everything the flow refuses, each as the RFCs say: errors that cannot be sent back (unknown
//! client, unregistered redirect URI) stay on Tessera's page; the others go back with `error`,
//! `state` and `iss`; the token endpoint answers `invalid_grant`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

#[tokio::test]
async fn an_unregistered_redirect_uri_or_unknown_client_gets_an_error_page_and_no_redirect() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    for uri in ["https://evil.example.com/cb", "https://app.example.com/cb/../other", "http://127.0.0.2/callback", ""] {
        let res = browser().get(authorize_url(&app, &s, &challenge, uri, &[])).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert!(res.headers().get("location").is_none(), "{uri}");
        assert_page_headers(&res);
        let page = res.text().await.unwrap();
        assert!(!page.contains("evil.example.com"), "the page does not link to it");
    }
    let res = browser().get(authorize_url(&app, &s, &challenge, REDIRECT, &[("client_id", "no-such-client")])).send();
    let res = res.await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
    // Even the form's POST, with a tampered redirect URI, redirects nowhere.
    let b = browser();
    let page = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap().text().await.unwrap();
    let tampered = page.replace("https://app.example.com/cb", "https://evil.example.com/cb");
    let res = submit(&app, &b, &tampered, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
}

#[tokio::test]
async fn a_missing_or_plain_challenge_and_other_bad_requests_go_back_as_errors_with_state_and_iss() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "short")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "admin")], "invalid_scope"),
        (vec![("prompt", "none")], "login_required"),
        (vec![("max_age", "soon")], "invalid_request"),
    ];
    for (extra, error) in cases {
        let res = browser().get(authorize_url(&app, &s, &challenge, REDIRECT, &extra)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{extra:?}");
        let q = query_of(&res);
        assert_eq!(get(&q, "error"), Some(error), "{extra:?}");
        assert_eq!(get(&q, "state"), Some("st-123"), "{extra:?}");
        assert_eq!(get(&q, "iss"), Some("http://127.0.0.1:8080"), "{extra:?}");
        assert!(get(&q, "code").is_none());
    }
    // A parameter sent twice (RFC 6749 §3.1), and OpenID request objects, which are not supported.
    let base = authorize_url(&app, &s, &challenge, REDIRECT, &[]);
    for (extra, error) in [
        ("&scope=openid&scope=openid", "invalid_request"),
        ("&request=eyJ", "request_not_supported"),
        ("&request_uri=urn:x", "request_uri_not_supported"),
    ] {
        let res = browser().get(format!("{base}{extra}")).send().await.unwrap();
        assert_eq!(get(&query_of(&res), "error"), Some(error), "{extra}");
    }
    let res = browser().get(format!("{base}&redirect_uri={LOOPBACK}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "which of two redirect URIs? neither");
    assert!(res.headers().get("location").is_none());
    // A client without the grant is unauthorized_client.
    let admin = app.admin_token().await;
    let patch = serde_json::json!({"redirect_uris": [REDIRECT]});
    let (cc_id, _) = app.create_client(&["client_credentials"], &["openid"]).await;
    let res = app.http.patch(app.url(&format!("/v1/admin/clients/{cc_id}"))).bearer_auth(&admin).json(&patch).send();
    assert_eq!(res.await.unwrap().status(), StatusCode::OK);
    let other = Setup {
        client_id: cc_id,
        secret: None,
        user_id: String::new(),
        username: String::new(),
        password: String::new(),
    };
    let res = browser().get(authorize_url(&app, &other, &challenge, REDIRECT, &[])).send().await.unwrap();
    assert_eq!(get(&query_of(&res), "error"), Some("unauthorized_client"));
}

#[tokio::test]
async fn a_wrong_verifier_another_redirect_uri_or_an_expired_code_is_invalid_grant() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    let (other_verifier, _) = pkce();
    assert_oauth_error(exchange(&app, &s, &code, REDIRECT, &other_verifier).await, 400, "invalid_grant").await;
    // plain: the challenge itself as the verifier.
    assert_oauth_error(exchange(&app, &s, &code, REDIRECT, &challenge).await, 400, "invalid_grant").await;
    assert_oauth_error(exchange(&app, &s, &code, LOOPBACK, &verifier).await, 400, "invalid_grant").await;
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", &s.client_id),
        ])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 400, "invalid_request").await;
    // None of these spent the code: the rightful request still works.
    assert_eq!(exchange(&app, &s, &code, REDIRECT, &verifier).await.status(), StatusCode::OK);

    // A code lives 60 s.
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    app.clock.advance(Duration::from_secs(61));
    assert_oauth_error(exchange(&app, &s, &code, REDIRECT, &verifier).await, 400, "invalid_grant").await;
    // Another client cannot redeem it.
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    let other = setup(&app, &[], &["openid"], true).await;
    assert_oauth_error(exchange(&app, &other, &code, REDIRECT, &verifier).await, 400, "invalid_grant").await;
    assert_eq!(exchange(&app, &s, &code, REDIRECT, &verifier).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_the_tokens_its_first_use_issued() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[("scope", "openid")]).await;
    let first: Value = exchange(&app, &s, &code, REDIRECT, &verifier).await.json().await.unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(introspect(&app, access).await["active"], true);
    assert_eq!(
        app.http.get(app.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap().status(),
        StatusCode::OK
    );

    assert_oauth_error(exchange(&app, &s, &code, REDIRECT, &verifier).await, 400, "invalid_grant").await;
    assert_eq!(introspect(&app, access).await["active"], false, "the first access token is revoked");
    let rt = first["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&app, rt).await["active"], false, "and its refresh family");
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &s.client_id)])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 400, "invalid_grant").await;
    assert_eq!(
        app.http.get(app.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn concurrent_uses_of_one_code_issue_tokens_once() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    let (a, b) =
        tokio::join!(exchange(&app, &s, &code, REDIRECT, &verifier), exchange(&peer, &s, &code, REDIRECT, &verifier));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "exactly one wins");
    let winner: Value = if a.status() == StatusCode::OK { a.json().await.unwrap() } else { b.json().await.unwrap() };
    // The loser was a second use: what the winner got is revoked, on both instances (the one that
    // did not see the second use learns it from the revocation feed).
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    let access = winner["access_token"].as_str().unwrap();
    for instance in [&app, &peer] {
        eventually(Duration::from_secs(10), "the winner's access token is inactive", || async {
            let res = instance.http.post(instance.url("/oauth/introspect")).basic_auth(&id, Some(&secret));
            let body: Value = res.form(&[("token", access)]).send().await.unwrap().json().await.unwrap();
            body["active"] == false
        })
        .await;
    }
}

#[tokio::test]
async fn a_form_post_without_the_csrf_token_or_cookie_is_refused() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let b = browser();
    let page = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap().text().await.unwrap();
    // The token left out.
    let mut form: Vec<(String, String)> = hidden_fields(&page).into_iter().filter(|(k, _)| k != "csrf_token").collect();
    form.push(("username".into(), s.username.clone()));
    form.push(("password".into(), s.password.clone()));
    let res = b.post(app.url("/oauth/authorize")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get("location").is_none());
    assert!(res.headers().get_all("set-cookie").iter().all(|c| !c.to_str().unwrap().contains("session")));
    assert!(res.text().await.unwrap().contains("expired"));
    // The token without the cookie it belongs to (another browser posting it: a forged request).
    let res = submit(&app, &browser(), &page, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A made-up token.
    let forged = page.replace(r#"name="csrf_token" value=""#, r#"name="csrf_token" value="x"#);
    assert_eq!(submit(&app, &b, &forged, &s.username, &s.password).await.status(), StatusCode::FORBIDDEN);
    // The page it answers with carries a working token.
    let res = b.post(app.url("/oauth/authorize")).form(&form).send().await.unwrap();
    let again = res.text().await.unwrap();
    assert_eq!(submit(&app, &b, &again, &s.username, &s.password).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_wrong_password_is_refused_on_the_page_and_locks_like_the_password_grant() {
    let app = TestAppBuilder::new().set("TESSERA_LOGIN_MAX_FAILURES", "3").spawn().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let b = browser();
    let page = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap().text().await.unwrap();
    let res = submit(&app, &b, &page, &s.username, "wrong password").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.headers().get("location").is_none());
    assert_page_headers(&res);
    let again = res.text().await.unwrap();
    assert!(again.contains("Incorrect username or password."), "{again}");
    assert!(again.contains(&format!(r#"value="{}""#, s.username)), "the username is kept");
    assert!(!again.contains("wrong password"), "the password is never echoed");
    // Empty fields are pointed out, and cost no attempt.
    let res = submit(&app, &b, &page, "", "").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("Enter your username and password."));
    // An unknown user reads the same.
    let res = submit(&app, &b, &page, "nobody-here", "wrong password").await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Two more failures lock the account: the right password is refused, identically.
    for _ in 0..2 {
        submit(&app, &b, &page, &s.username, "wrong password").await;
    }
    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("Incorrect username or password."));
    // After the lockout the right password works again.
    app.clock.advance(Duration::from_secs(901));
    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn redirect_uris_are_validated_at_registration_and_editable() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let admin = app.admin_token().await;
    let path = format!("/v1/admin/clients/{}", s.client_id);
    let patch = |body: Value| app.http.patch(app.url(&path)).bearer_auth(&admin).json(&body).send();
    assert_problem(
        patch(serde_json::json!({"redirect_uris": ["http://app.example.com/cb"]})).await.unwrap(),
        400,
        "INVALID_REDIRECT_URI",
    )
    .await;
    assert_problem(
        patch(serde_json::json!({"post_logout_redirect_uris": ["https://a.example/#x"]})).await.unwrap(),
        400,
        "INVALID_REDIRECT_URI",
    )
    .await;
    let res = patch(serde_json::json!({"redirect_uris": ["https://new.example.com/cb"]})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, challenge) = pkce();
    let res = browser().get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "the old URI is no longer registered");
    let res =
        browser().get(authorize_url(&app, &s, &challenge, "https://new.example.com/cb", &[])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_parameters_never_fail_the_service() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    // Text Postgres cannot store, in every parameter that reaches it.
    for (name, value) in [
        ("client_id", "a\u{0}b"),
        ("nonce", "n\u{0}"),
        ("scope", "openid\u{0}"),
        ("redirect_uri", "https://app.example.com/c\u{0}b"),
    ] {
        let res = browser().get(authorize_url(&app, &s, &challenge, REDIRECT, &[(name, value)])).send().await.unwrap();
        assert!(res.status().is_client_error() || res.status() == StatusCode::SEE_OTHER, "{name}: {}", res.status());
    }
    let res = app
        .http
        .get(app.url("/oauth/logout"))
        .query(&[("client_id", "a\u{0}b"), ("post_logout_redirect_uri", AFTER_LOGOUT)]);
    assert_eq!(res.send().await.unwrap().status(), StatusCode::OK);
    let res =
        app.http.get(app.url("/oauth/authorize")).header("cookie", "tessera_session=%00\"x; tessera_csrf=;; =").send();
    assert_eq!(res.await.unwrap().status(), StatusCode::BAD_REQUEST);
    for code in ["tsc_\u{0}", "nope", &"x".repeat(5000)] {
        assert_oauth_error(exchange(&app, &s, code, REDIRECT, &verifier).await, 400, "invalid_grant").await;
    }
    assert_oauth_error(exchange(&app, &s, "tsc_x", REDIRECT, "short").await, 400, "invalid_grant").await;
}

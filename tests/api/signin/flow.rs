//! The whole code flow: the page, the form, the redirect, the token exchange, the ID token, the
//! session that spares a second sign-in, `prompt` and `max_age`, UserInfo.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;

use super::*;
use crate::signing::parts;

/// Verifies an ID token with nothing but the published JWKS: RS256, by `kid`.
async fn verify_id_token(app: &TestApp, token: &str, audience: &str) -> Value {
    let (header, _) = parts(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT", "an ID token is never typed at+jwt");
    let jwks: Value = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).expect("kid in the JWKS");
    assert_eq!(jwk["kty"], "RSA");
    let key = DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[audience]);
    v.set_issuer(&["http://127.0.0.1:8080"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).expect("the ID token verifies against the JWKS").claims
}

#[tokio::test]
async fn code_and_pkce_yield_tokens_and_an_id_token_that_verifies_against_the_jwks() {
    let app = spawn_app().await;
    let s = setup(&app, &["keys:read"], &["openid", "profile", "keys:read", "keys:write"], true).await;
    let (verifier, challenge) = pkce();
    let b = browser();
    let url =
        authorize_url(&app, &s, &challenge, REDIRECT, &[("scope", "openid profile keys:read"), ("nonce", "n-0S6")]);
    let res = b.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_page_headers(&res);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let set_cookie: Vec<&str> = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(set_cookie
        .iter()
        .any(|c| c.starts_with("tessera_csrf=") && c.contains("HttpOnly") && c.contains("SameSite=Lax")));
    let page = res.text().await.unwrap();
    for needle in [
        r#"<label for="username">Username</label>"#,
        r#"<label for="password">Password</label>"#,
        "Sign in</button>",
        "Example App",
    ] {
        assert!(page.contains(needle), "the page lacks {needle}: {page}");
    }
    assert!(!page.contains("<script") && !page.contains("style="), "no script, no inline style");
    assert!(page.contains(r#"href="../assets/tessera.css""#));
    let css = app.http.get(app.url("/assets/tessera.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));

    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("tessera_session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "a loopback http issuer gets no Secure cookie: {cookie}");
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://app.example.com/cb?"), "{location}");
    let q = query_of(&res);
    assert_eq!(get(&q, "state"), Some("st-123"));
    assert_eq!(get(&q, "iss"), Some("http://127.0.0.1:8080"), "RFC 9207");
    let code = get(&q, "code").unwrap();
    assert!(code.starts_with("tsc_"));

    let res = exchange(&app, &s, code, REDIRECT, &verifier).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "openid profile keys:read");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("tsr_"));
    let access = body["access_token"].as_str().unwrap();
    let (header, at) = parts(access);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(at["sub"], s.user_id.as_str());
    assert_eq!(at["client_id"], s.client_id.as_str());

    let id = verify_id_token(&app, body["id_token"].as_str().unwrap(), &s.client_id).await;
    assert_eq!(id["sub"], s.user_id.as_str());
    assert_eq!(id["aud"], s.client_id.as_str());
    assert_eq!(id["nonce"], "n-0S6");
    assert_eq!(id["sid"], at["sid"], "the sign-in's sid, as on its access tokens");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((id["auth_time"].as_i64().unwrap() - now).abs() < 60, "{id}");
    assert!(id["exp"].as_i64().unwrap() > id["iat"].as_i64().unwrap());

    // UserInfo, with the header or the form parameter.
    let res = app.http.get(app.url("/oauth/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let info: Value = res.json().await.unwrap();
    assert_eq!(info["sub"], s.user_id.as_str());
    assert_eq!(info["preferred_username"], s.username.as_str());
    let res = app.http.post(app.url("/oauth/userinfo")).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.http.get(app.url("/oauth/userinfo")).bearer_auth("nonsense").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    // The refresh token works like any other.
    let rt = body["refresh_token"].as_str().unwrap();
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &s.client_id)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let refreshed: Value = res.json().await.unwrap();
    assert_eq!(refreshed["scope"], "openid profile keys:read", "OpenID scopes survive a refresh");
}

#[tokio::test]
async fn a_confidential_client_authenticates_and_without_openid_gets_no_id_token() {
    let app = spawn_app().await;
    let s = setup(&app, &["keys:read"], &["keys:read"], false).await;
    let (verifier, challenge) = pkce();
    let (_, code) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    // Without its secret the client is not authenticated.
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", &verifier),
        ("client_id", &s.client_id),
    ];
    let res = app.http.post(app.url("/oauth/token")).form(&form).send().await.unwrap();
    assert_oauth_error(res, 401, "invalid_client").await;
    let res = exchange(&app, &s, &code, REDIRECT, &verifier).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "keys:read");
    assert!(body.get("id_token").is_none(), "{body}");
    // A token without openid is not for UserInfo.
    let res = app.http.get(app.url("/oauth/userinfo")).bearer_auth(body["access_token"].as_str().unwrap()).send();
    let res = res.await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
}

#[tokio::test]
async fn a_signed_in_browser_goes_straight_back_until_prompt_login_or_max_age_asks_again() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let (b, _) = sign_in_for_code(&app, &s, &challenge, &[("scope", "openid")]).await;

    // The session answers: a code at once, no page.
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("scope", "openid"), ("nonce", "again")])).send();
    let res = res.await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let q = query_of(&res);
    let body: Value = exchange(&app, &s, get(&q, "code").unwrap(), REDIRECT, &verifier).await.json().await.unwrap();
    let (_, id) = parts(body["id_token"].as_str().unwrap());
    assert_eq!(id["nonce"], "again");
    let first_auth_time = id["auth_time"].as_i64().unwrap();
    // prompt=none with a session: a code too.
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")])).send().await.unwrap();
    assert!(get(&query_of(&res), "code").is_some());

    // prompt=login asks again even though the session is live.
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "login")])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // max_age: a sign-in older than that asks again; prompt=none then says login_required.
    app.clock.advance(Duration::from_secs(120));
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("max_age", "600")])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "within max_age");
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("max_age", "60")])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "older than max_age");
    let page = res.text().await.unwrap();
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("max_age", "60"), ("prompt", "none")])).send();
    let q = query_of(&res.await.unwrap());
    assert_eq!(get(&q, "error"), Some("login_required"));
    // Signing in again renews auth_time.
    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    let code = get(&query_of(&res), "code").unwrap().to_owned();
    let body: Value = exchange(&app, &s, &code, REDIRECT, &verifier).await.json().await.unwrap();
    let (_, id) = parts(body["id_token"].as_str().unwrap());
    assert!(id["auth_time"].as_i64().unwrap() >= first_auth_time + 120, "{id}");

    // The idle lifetime ends the session.
    app.clock.advance(Duration::from_secs(3_601));
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(get(&query_of(&res), "error"), Some("login_required"));
}

#[tokio::test]
async fn a_loopback_redirect_uri_matches_on_any_port_and_gets_the_code() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let b = browser();
    let uri = "http://127.0.0.1:53127/callback";
    let page = b.get(authorize_url(&app, &s, &challenge, uri, &[])).send().await.unwrap().text().await.unwrap();
    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://127.0.0.1:53127/callback?code="), "{location}");
    let code = get(&query_of(&res), "code").unwrap().to_owned();
    // The token request names the same URI, port included.
    assert_oauth_error(exchange(&app, &s, &code, LOOPBACK, &verifier).await, 400, "invalid_grant").await;
    assert_eq!(exchange(&app, &s, &code, uri, &verifier).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_https_issuer_gets_secure_host_prefixed_cookies() {
    let app = TestAppBuilder::new().set("TESSERA_ISSUER", "https://id.example.com").spawn().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let res = app.http.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-tessera_csrf=") && cookie.contains("; Secure") && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
}

#[tokio::test]
async fn the_service_name_is_configurable() {
    let app = TestAppBuilder::new().set("TESSERA_SERVICE_NAME", "Acme <ID>").spawn().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let page = app.http.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap().text().await;
    let page = page.unwrap();
    assert!(page.contains("Acme &lt;ID&gt;") && !page.contains("Acme <ID>"), "named, and escaped");
}

#[tokio::test]
async fn signing_in_again_replaces_the_session_and_ends_the_old_one() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (_, challenge) = pkce();
    let b = browser();
    let page = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[])).send().await.unwrap().text().await.unwrap();
    let res = submit(&app, &b, &page, &s.username, &s.password).await;
    let first = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let with_cookie = |cookie: String| {
        app.http
            .get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")]))
            .header("cookie", cookie)
            .send()
    };
    assert!(get(&query_of(&with_cookie(first.clone()).await.unwrap()), "code").is_some());

    let page = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "login")])).send().await.unwrap();
    let res = submit(&app, &b, &page.text().await.unwrap(), &s.username, &s.password).await;
    let second = res.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_ne!(first, second, "a new session for a new sign-in");
    assert_eq!(get(&query_of(&with_cookie(first).await.unwrap()), "error"), Some("login_required"));
    assert!(get(&query_of(&with_cookie(second).await.unwrap()), "code").is_some());
}

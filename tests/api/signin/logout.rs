//! RP-initiated logout: the browser's session ends; the browser goes back only to a registered
//! post-logout URI.

use reqwest::StatusCode;
use serde_json::Value;

use super::*;

#[tokio::test]
async fn logout_ends_the_session_and_redirects_only_to_a_registered_uri() {
    let app = spawn_app().await;
    let s = setup(&app, &[], &["openid"], true).await;
    let (verifier, challenge) = pkce();
    let (b, code) = sign_in_for_code(&app, &s, &challenge, &[("scope", "openid")]).await;
    let body: Value = exchange(&app, &s, &code, REDIRECT, &verifier).await.json().await.unwrap();
    let id_token = body["id_token"].as_str().unwrap();
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")])).send().await.unwrap();
    assert!(get(&query_of(&res), "code").is_some(), "signed in");

    // An unregistered target: signed out, but kept on Tessera's page.
    let res = b
        .get(app.url("/oauth/logout"))
        .query(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example.com/"),
            ("state", "s1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("location").is_none());
    assert_page_headers(&res);
    assert!(res.text().await.unwrap().contains("You are signed out"));
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(get(&query_of(&res), "error"), Some("login_required"), "the session is over");

    // Signed in again, then out through the registered URI, named by the hint.
    let (b, _) = sign_in_for_code(&app, &s, &challenge, &[]).await;
    let res = b
        .post(app.url("/oauth/logout"))
        .form(&[("id_token_hint", id_token), ("post_logout_redirect_uri", AFTER_LOGOUT), ("state", "s2")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], format!("{AFTER_LOGOUT}?state=s2").as_str());
    let cleared = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("tessera_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let res = b.get(authorize_url(&app, &s, &challenge, REDIRECT, &[("prompt", "none")])).send().await.unwrap();
    assert_eq!(get(&query_of(&res), "error"), Some("login_required"));

    // client_id instead of a hint works too; a hint for another client does not redirect.
    let res = app
        .http
        .get(app.url("/oauth/logout"))
        .query(&[("client_id", s.client_id.as_str()), ("post_logout_redirect_uri", AFTER_LOGOUT)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let other = setup(&app, &[], &["openid"], true).await;
    let res = app
        .http
        .get(app.url("/oauth/logout"))
        .query(&[
            ("client_id", other.client_id.as_str()),
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", AFTER_LOGOUT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the hint names another client");
    // A forged hint names nobody.
    let forged = format!("{}x", &id_token[..id_token.len() - 1]);
    let res = app
        .http
        .get(app.url("/oauth/logout"))
        .query(&[("id_token_hint", forged.as_str()), ("post_logout_redirect_uri", AFTER_LOGOUT)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

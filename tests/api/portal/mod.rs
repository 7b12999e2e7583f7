//! The developer portal over HTTP, as a browser would drive it (a cookie jar, redirects read by
//! hand): its sign-in through `/oauth/authorize` with PKCE, its headers, CSRF, owners' keys kept
//! apart, and the admin pages kept to admins. (The person's view is tests/browser/portal.mjs.)

use reqwest::{Response, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::signin::{assert_page_headers, browser, hidden_fields, submit};

/// The path and query of a redirect, to follow it on the test app (whose issuer names another port).
fn follow(app: &TestApp, res: &Response) -> String {
    let location = res.headers().get("location").expect("a redirect").to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    app.url(&format!("{}?{}", url.path(), url.query().unwrap_or("")))
}

/// A user with `scopes`; returns their username and password.
async fn user(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let admin = app.admin_token().await;
    let username = format!("dev{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "correct horse battery".to_owned();
    let res = app
        .post_json("/v1/admin/users", &admin, &json!({"username": username, "password": password, "scopes": scopes}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    (username, password)
}

/// A browser signed in to the portal as a new user with `scopes`.
async fn signed_in(app: &TestApp, scopes: &[&str]) -> reqwest::Client {
    let (username, password) = user(app, scopes).await;
    let b = browser();
    let res = b.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let page = b.get(follow(app, &res)).send().await.unwrap().text().await.unwrap();
    let res = submit(app, &b, &page, &username, &password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = b.get(follow(app, &res)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the callback starts the session");
    let cookies: Vec<&str> = res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let session = cookies.iter().find(|c| c.starts_with("tessera_portal=")).expect("a session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"), "{session}");
    b
}

/// The signed-in home page.
async fn home(app: &TestApp, b: &reqwest::Client) -> String {
    let res = b.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.text().await.unwrap()
}

fn csrf(page: &str) -> String {
    hidden_fields(page).into_iter().find(|(k, _)| k == "csrf_token").expect("a CSRF token").1
}

/// Creates a key through the portal's form; returns its id (from its link in the table).
async fn create_key(app: &TestApp, b: &reqwest::Client, name: &str) -> String {
    let token = csrf(&home(app, b).await);
    let form = [("csrf_token", token.as_str()), ("name", name), ("scopes", "orders:read"), ("environment", "test")];
    let res = b.post(app.url("/portal/keys")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.text().await.unwrap().contains("tsk_test_"), "the secret is shown once");
    let page = home(app, b).await;
    let at = page.find(&format!(">{name}<")).expect("the key in the table");
    let link = &page[..at];
    let id = &link[link.rfind("/portal/keys/").unwrap() + "/portal/keys/".len()..];
    id[..id.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn without_a_session_the_portal_signs_in_through_authorize_with_pkce_s256() {
    let app = spawn_app().await;
    let res = browser().get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/oauth/authorize");
    let q: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get("client_id").as_deref(), Some("tessera-portal"));
    assert_eq!(get("response_type").as_deref(), Some("code"));
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(get("code_challenge").map(|c| c.len()), Some(43), "a SHA-256 challenge");
    assert!(get("state").is_some_and(|s| s.len() >= 22));
    assert_eq!(get("redirect_uri").as_deref(), Some("http://127.0.0.1:8080/portal/callback"));
    let login = res.headers()["set-cookie"].to_str().unwrap();
    assert!(login.starts_with("tessera_portal_login=") && login.contains("HttpOnly"), "{login}");
    assert!(!login.contains(&get("code_challenge").unwrap()), "the cookie holds the verifier, not the challenge");
}

#[tokio::test]
async fn signed_in_pages_send_the_csp_and_deny_framing_and_hold_no_token() {
    let app = spawn_app().await;
    let b = signed_in(&app, &["keys:read", "keys:write"]).await;
    let res = b.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_page_headers(&res);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.unwrap();
    assert!(page.contains("Create key") && page.contains("You have no keys yet."), "the (empty) key list and its form");
    assert!(!page.contains("eyJ"), "no token in the page");
    assert!(!page.contains("<script>"), "no inline script");
    let res = b.get(app.url("/assets/portal.js")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let b = signed_in(&app, &["keys:read", "keys:write"]).await;
    for form in [vec![("name", "sneaky")], vec![("name", "sneaky"), ("csrf_token", "not-the-token")]] {
        let res = b.post(app.url("/portal/keys")).form(&form).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    assert!(!home(&app, &b).await.contains("sneaky"), "no key was created");
    let res = b.post(app.url("/portal/sign-out")).form(&[("csrf_token", "x")]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "not even sign-out");
    // With the page's token it works.
    let id = create_key(&app, &b, "with-token").await;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
}

#[tokio::test]
async fn a_developer_cannot_see_or_change_another_developers_keys() {
    let app = spawn_app().await;
    let alice = signed_in(&app, &["keys:read", "keys:write"]).await;
    let bob = signed_in(&app, &["keys:read", "keys:write"]).await;
    let id = create_key(&app, &alice, "alice-private").await;
    let page = home(&app, &bob).await;
    assert!(!page.contains("alice-private"));
    let res = bob.get(app.url(&format!("/portal/keys/{id}"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let token = csrf(&page);
    for action in ["revoke", "rotate", "disable", "edit"] {
        let res = bob
            .post(app.url(&format!("/portal/keys/{id}/{action}")))
            .form(&[("csrf_token", token.as_str()), ("name", "mine now")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{action}");
    }
    let res = alice.get(app.url(&format!("/portal/keys/{id}"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains("alice-private") && page.contains(">active<"), "untouched");
}

#[tokio::test]
async fn admin_pages_are_for_admins_only() {
    let app = spawn_app().await;
    let dev = signed_in(&app, &["keys:read", "keys:write"]).await;
    let admin = signed_in(&app, &["admin"]).await;
    for page in ["clients", "users", "signing-keys", "anomalies", "audit", "webhooks"] {
        let res = dev.get(app.url(&format!("/portal/admin/{page}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{page}");
        assert_page_headers(&res);
        let res = admin.get(app.url(&format!("/portal/admin/{page}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{page}");
    }
    let users = admin.get(app.url("/portal/admin/clients")).send().await.unwrap().text().await.unwrap();
    assert!(users.contains("tessera-portal"), "the built-in client is listed");
    // Both kinds of signing key, each row saying which: two of access tokens, two of ID tokens.
    let keys = admin.get(app.url("/portal/admin/signing-keys")).send().await.unwrap().text().await.unwrap();
    assert_eq!(keys.matches(">access_token<").count(), 2, "{keys}");
    assert_eq!(keys.matches(">id_token<").count(), 2, "{keys}");
    let token = csrf(&home(&app, &dev).await);
    let res =
        dev.post(app.url("/portal/admin/signing-keys/rotate")).form(&[("csrf_token", &token)]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_out_ends_the_portal_session_and_goes_through_oauth_logout() {
    let app = spawn_app().await;
    let b = signed_in(&app, &["keys:read"]).await;
    let token = csrf(&home(&app, &b).await);
    let res = b.post(app.url("/portal/sign-out")).form(&[("csrf_token", &token)]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let location = url::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/oauth/logout");
    assert!(location.query().unwrap().contains("client_id=tessera-portal"));
    let res = b.get(follow(&app, &res)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "back to the signed-out page");
    assert!(res.headers()["location"].to_str().unwrap().ends_with("/portal/signed-out"));
    // Both sessions are gone: the portal asks to sign in, and the sign-in page shows its form.
    let res = b.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = b.get(follow(&app, &res)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "the sign-in page, not a straight redirect");
}

#[tokio::test]
async fn the_portal_acts_only_with_the_scopes_the_user_holds() {
    let app = spawn_app().await;
    let reader = signed_in(&app, &["keys:read"]).await;
    let token = csrf(&home(&app, &reader).await);
    let form = [("csrf_token", token.as_str()), ("name", "not allowed"), ("environment", "live")];
    let res = reader.post(app.url("/portal/keys")).form(&form).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "keys:write is needed to create a key");
    assert!(!home(&app, &reader).await.contains("not allowed"));
    let nobody = signed_in(&app, &[]).await;
    let res = nobody.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "keys:read is needed for the key list");
}

#[tokio::test]
async fn housekeeping_removes_portal_sessions_that_can_no_longer_be_used() {
    let app = spawn_app().await;
    let b = signed_in(&app, &["keys:read"]).await;
    let _other = signed_in(&app, &["keys:read"]).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM portal_sessions").fetch_one(&app.parts.db).await.unwrap()
    };
    assert_eq!(count().await, 2);
    app.parts.housekeeping.purge_expired().await.unwrap();
    assert_eq!(count().await, 2, "live sessions stay");
    // The first user's sign-in is revoked elsewhere (say, refresh-token reuse): the page asks to
    // sign in again, and housekeeping removes the dead session.
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now()
          WHERE id = (SELECT family_id FROM portal_sessions ORDER BY created_at LIMIT 1)",
    )
    .execute(&app.parts.db)
    .await
    .unwrap();
    let res = b.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the session ended with its family");
    app.parts.housekeeping.purge_expired().await.unwrap();
    assert_eq!(count().await, 1, "only the live session is left");
}

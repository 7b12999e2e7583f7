//! Authorization code with PKCE on Tessera's sign-in page, and OpenID Connect: driven over HTTP
//! as a browser would (a cookie jar, the page's form fields, redirects read by hand).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

mod discovery;
mod flow;
mod logout;
mod refusals;
mod rotation;

pub const REDIRECT: &str = "https://app.example.com/cb";
pub const LOOPBACK: &str = "http://127.0.0.1/callback";
pub const AFTER_LOGOUT: &str = "https://app.example.com/bye";

/// A user and a client registered for the code flow.
pub struct Setup {
    pub client_id: String,
    /// `None` for a public client.
    pub secret: Option<String>,
    pub user_id: String,
    pub username: String,
    pub password: String,
}

/// A user with `scopes` and a client allowed `client_scopes`, the code and refresh grants, and
/// [`REDIRECT`], [`LOOPBACK`] and [`AFTER_LOGOUT`].
pub async fn setup(app: &TestApp, scopes: &[&str], client_scopes: &[&str], public: bool) -> Setup {
    let admin = app.admin_token().await;
    let username = format!("ada{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "correct horse battery".to_owned();
    let res = app
        .post_json("/v1/admin/users", &admin, &json!({"username": username, "password": password, "scopes": scopes}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({
                "name": "Example App",
                "grant_types": ["authorization_code", "refresh_token"],
                "scopes": client_scopes,
                "public": public,
                "redirect_uris": [REDIRECT, LOOPBACK],
                "post_logout_redirect_uris": [AFTER_LOGOUT],
            }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let client: Value = res.json().await.unwrap();
    Setup {
        client_id: client["client_id"].as_str().unwrap().into(),
        secret: client["client_secret"].as_str().map(str::to_owned),
        user_id: user["id"].as_str().unwrap().into(),
        username,
        password,
    }
}

/// A browser: its own cookie jar, redirects left to the test.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A PKCE verifier and its S256 challenge.
pub fn pkce() -> (String, String) {
    let verifier = format!("v{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

/// `/oauth/authorize?…` for `s` with `challenge` and `redirect_uri`; `extra` replaces or adds
/// parameters (an empty value leaves the parameter out).
pub fn authorize_url(app: &TestApp, s: &Setup, challenge: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", s.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    let mut url = url::Url::parse(&app.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut().extend_pairs(&params);
    url.into()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The `name`/`value` pairs of a page's hidden inputs.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for tag in html.split("<input").skip(1) {
        let tag = &tag[..tag.find('>').unwrap()];
        if !tag.contains(r#"type="hidden""#) {
            continue;
        }
        let attr = |name: &str| {
            let start = tag.find(&format!(r#"{name}=""#))? + name.len() + 2;
            let end = start + tag[start..].find('"')?;
            Some(unescape(&tag[start..end]))
        };
        out.push((attr("name").unwrap(), attr("value").unwrap_or_default()));
    }
    out
}

/// Posts the sign-in page's form back with `username` and `password`.
pub async fn submit(app: &TestApp, b: &reqwest::Client, page: &str, username: &str, password: &str) -> Response {
    let mut form = hidden_fields(page);
    form.push(("username".into(), username.into()));
    form.push(("password".into(), password.into()));
    b.post(app.url("/oauth/authorize")).form(&form).send().await.unwrap()
}

/// The query parameters of a redirect.
pub fn query_of(res: &Response) -> Vec<(String, String)> {
    let location = res.headers().get("location").expect("a redirect").to_str().unwrap();
    url::Url::parse(location).unwrap().query_pairs().into_owned().collect()
}

pub fn get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Opens the sign-in page, signs in, and returns the browser and the code from the redirect.
pub async fn sign_in_for_code(
    app: &TestApp,
    s: &Setup,
    challenge: &str,
    extra: &[(&str, &str)],
) -> (reqwest::Client, String) {
    let b = browser();
    let res = b.get(authorize_url(app, s, challenge, REDIRECT, extra)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    let res = submit(app, &b, &page, &s.username, &s.password).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let q = query_of(&res);
    (b, get(&q, "code").expect("a code").to_owned())
}

/// `grant_type=authorization_code`.
pub async fn exchange(app: &TestApp, s: &Setup, code: &str, redirect_uri: &str, verifier: &str) -> Response {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ];
    let req = app.http.post(app.url("/oauth/token"));
    let req = match &s.secret {
        Some(secret) => req.basic_auth(&s.client_id, Some(secret)),
        None => {
            form.push(("client_id", &s.client_id));
            req
        }
    };
    req.form(&form).send().await.unwrap()
}

/// Introspects `token` with a client of its own.
pub async fn introspect(app: &TestApp, token: &str) -> Value {
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    let res = app.http.post(app.url("/oauth/introspect")).basic_auth(&id, Some(&secret)).form(&[("token", token)]);
    res.send().await.unwrap().json().await.unwrap()
}

/// Asserts the headers every HTML page sends.
pub fn assert_page_headers(res: &Response) {
    let h = res.headers();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
}

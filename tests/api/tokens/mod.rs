//! Users, the password grant, rotating refresh tokens with reuse detection, revocation and
//! introspection.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

mod password;
mod refresh;
mod revoke;

pub struct Login {
    pub client_id: String,
    pub secret: String,
    pub user_id: String,
    pub username: String,
    pub password: String,
}

/// A user with `scopes` and a password/refresh client allowed `client_scopes`.
pub async fn setup_login(app: &TestApp, scopes: &[&str], client_scopes: &[&str]) -> Login {
    let admin = app.admin_token().await;
    let username = format!("user{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "correct horse battery".to_owned();
    let res = app
        .post_json("/v1/admin/users", &admin, &json!({"username": username, "password": password, "scopes": scopes}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["username"], username.as_str());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let (client_id, secret) = app.create_client(&["password", "refresh_token"], client_scopes).await;
    Login { client_id, secret, user_id: user["id"].as_str().unwrap().into(), username, password }
}

pub async fn password_grant(app: &TestApp, l: &Login, password: &str, scope: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "password"), ("username", l.username.as_str()), ("password", password)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    app.http.post(app.url("/oauth/token")).basic_auth(&l.client_id, Some(&l.secret)).form(&form).send().await.unwrap()
}

pub async fn refresh(app: &TestApp, l: &Login, token: &str, scope: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    app.http.post(app.url("/oauth/token")).basic_auth(&l.client_id, Some(&l.secret)).form(&form).send().await.unwrap()
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    app.http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

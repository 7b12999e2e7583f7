//! API keys: shown once and stored only as keyed hashes, verified in the contract's order from a
//! cache, rotated exactly once with a grace period, revoked everywhere, limited, audited, and
//! counted for usage across instances.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

mod create;
mod revoke;
mod rotate;
mod usage;
mod verify;

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

/// A developer who logged in with the password grant: (access token, user id).
async fn developer(app: &TestApp) -> (String, String) {
    let login = setup_login(app, &ALL, &ALL).await;
    let res = password_grant(app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_owned(), login.user_id)
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn simple_key(app: &TestApp, token: &str) -> Value {
    create(app, token, json!({"name": "ci", "scopes": ["deploy", "read"], "environment": "live"})).await
}

async fn verify(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The verification code for `key` (`VALID` when valid).
async fn code(app: &TestApp, token: &str, body: Value) -> String {
    let v = verify(app, token, body).await;
    if v["valid"] == true {
        assert!(v.get("code").is_none(), "{v}");
        "VALID".into()
    } else {
        assert_eq!(v.as_object().unwrap().len(), 2, "an invalid answer says only why: {v}");
        v["code"].as_str().unwrap().to_owned()
    }
}

fn key_of(created: &Value) -> &str {
    created["key"].as_str().unwrap()
}

fn id_of(created: &Value) -> &str {
    created["id"].as_str().unwrap()
}

/// The 32 random characters of a key.
fn body_of(key: &str) -> &str {
    &key[9..41]
}

async fn rotate(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/keys/{id}/rotate"), token, &body).await
}

async fn revoke(app: &TestApp, token: &str, id: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/keys/{id}/revoke"), token, &body).await
}

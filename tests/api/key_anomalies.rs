//! `GET /v1/keys/{id}/anomalies` (owner or admin: one key's anomalies, the admin list's shape) and
//! `GET /v1/keys/{id}/usage?bucket=day` (UTC days).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

async fn developer(app: &TestApp) -> String {
    let login = setup_login(app, &ALL, &ALL).await;
    let res = password_grant(app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn key(app: &TestApp, token: &str) -> (String, String) {
    let res = app.post_json("/v1/keys", token, &json!({"name": "k", "scopes": ["read"], "environment": "live"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    (v["id"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_keys_anomalies_are_its_own_and_only_its_owner_or_an_admin_sees_them() {
    let app = TestAppBuilder::new().set("TESSERA_LEAK_POLICY", "notify").spawn().await;
    let dev = developer(&app).await;
    let (id, secret) = key(&app, &dev).await;
    let (other_id, _) = key(&app, &dev).await;
    let res = app.http.post(app.url("/v1/keys/leaks")).json(&json!([{"token": secret, "source": "github"}]));
    assert_eq!(res.send().await.unwrap().status(), StatusCode::OK);

    let res = app.get_auth(&format!("/v1/keys/{id}/anomalies"), &dev).await;
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["kind"], "KEY_LEAKED");
    assert_eq!(list[0]["key_id"], id.as_str());
    let none: Value = app.get_auth(&format!("/v1/keys/{other_id}/anomalies"), &dev).await.json().await.unwrap();
    assert_eq!(none, json!([]), "another key's list holds none of this key's");

    let admin = app.admin_token().await;
    let seen: Value = app.get_auth(&format!("/v1/keys/{id}/anomalies"), &admin).await.json().await.unwrap();
    assert_eq!(seen.as_array().unwrap().len(), 1, "an admin sees any key's");
    let stranger = developer(&app).await;
    assert_problem(app.get_auth(&format!("/v1/keys/{id}/anomalies"), &stranger).await, 404, "NOT_FOUND").await;
    let res = app.http.get(app.url(&format!("/v1/keys/{id}/anomalies"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn usage_comes_in_utc_day_buckets_on_request() {
    let app = spawn_app().await;
    let dev = developer(&app).await;
    let (id, secret) = key(&app, &dev).await;
    let verifier = app.token_with_scopes(&["keys:verify"]).await;
    for scopes in [json!([]), json!([]), json!(["write"])] {
        let res = app.post_json("/v1/keys/verify", &verifier, &json!({"key": secret, "scopes": scopes})).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = app.get_auth(&format!("/v1/keys/{id}/usage?bucket=day"), &dev).await;
    assert_eq!(res.status(), StatusCode::OK);
    let usage: Value = res.json().await.unwrap();
    let buckets = usage["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 1, "{usage}");
    assert!(buckets[0]["start"].as_str().unwrap().ends_with("T00:00:00Z"), "{usage}");
    assert_eq!(buckets[0]["valid"], 2);
    assert_eq!(buckets[0]["denied"]["INSUFFICIENT_SCOPE"], 1);
    let res = app.get_auth(&format!("/v1/keys/{id}/usage?bucket=week"), &dev).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

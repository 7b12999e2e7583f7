//! `TESSERA_DATABASE_REPLICA_URL`: reports (usage, anomalies, the audit log) read from the replica's
//! pool, read-only; a replica that is down fails only those reads, with 503, never verification.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ALL: [&str; 4] = ["keys:read", "keys:write", "keys:verify", "admin"];

async fn key(app: &TestApp, token: &str) -> (String, String) {
    let body = json!({"name": "r", "scopes": [], "environment": "live"});
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    (v["id"].as_str().unwrap().into(), v["key"].as_str().unwrap().into())
}

async fn replica_backends(app: &TestApp, name: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(name)
        .fetch_one(&mut app.db().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn reports_read_through_the_replica_pool_and_only_there() {
    let name = format!("tessera_replica_{}", uuid::Uuid::new_v4().simple());
    let primary = spawn_app().await;
    // The "replica" is the same database reached as another application: what reads through it shows.
    let url = format!("{}/{}?application_name={name}", server_url(), primary.db_name);
    let mut b = TestAppBuilder::new();
    b.env = primary.env.clone();
    b.env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
    b.db_name = Some(primary.db_name.clone());
    let app = b.set("TESSERA_DATABASE_REPLICA_URL", &url).spawn().await;
    let token = app.token_with_scopes(&ALL).await;
    let (id, secret) = key(&app, &token).await;
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": secret})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["valid"], true);
    assert_eq!(replica_backends(&app, &name).await, 0, "nothing read the replica yet: it connects lazily");
    for path in [format!("/v1/keys/{id}/usage"), "/v1/admin/audit".into(), "/v1/admin/anomalies".into()] {
        let res = app.get_auth(&path, &token).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    assert!(replica_backends(&app, &name).await >= 1, "reports went through the replica's pool");
    app.stop().await;
    primary.stop().await;
}

#[tokio::test]
async fn a_replica_that_is_down_fails_reports_with_503_and_nothing_else() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = TestAppBuilder::new()
        .set("TESSERA_DATABASE_REPLICA_URL", &format!("postgres://postgres@127.0.0.1:{port}/nowhere"))
        .spawn()
        .await;
    let token = app.token_with_scopes(&ALL).await;
    let (id, secret) = key(&app, &token).await;
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": secret})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["valid"], true, "verification reads the primary");
    let res = app.get_auth(&format!("/v1/keys/{id}/usage"), &token).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
}

//! Revocation fan-out: outbox → Redis pub/sub + stream, catch-up paging, Redis outages.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

mod delivery;
mod publish;

/// A redis-server of the test's own, on a free port, killed on drop.
struct OwnRedis {
    child: Option<Child>,
    port: u16,
}

impl OwnRedis {
    async fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let started = Self { child: Some(child), port };
        eventually(Duration::from_secs(5), "redis-server accepts connections", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        started
    }
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port).await
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn prefix(app: &TestApp) -> String {
    app.env["TESSERA_REDIS_PREFIX"].clone()
}

async fn stream_events(redis_url: &str, key: &str) -> Vec<Value> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let event = fields.into_iter().find(|(k, _)| k == "event").unwrap().1;
            serde_json::from_str(&event).unwrap()
        })
        .collect()
}

async fn revocations_page(app: &TestApp, token: &str, after: i64, limit: i64) -> Value {
    let res = app.get_auth(&format!("/v1/revocations?after={after}&limit={limit}"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn new_key(app: &TestApp, token: &str) -> (String, String) {
    let res = app.post_json("/v1/keys", token, &json!({"name": "fan-out", "scopes": [], "environment": "live"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: Value = res.json().await.unwrap();
    (v["id"].as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned())
}

/// `VALID` or the refusal code.
async fn verify_code(app: &TestApp, token: &str, key: &str) -> String {
    let v: Value = app.post_json("/v1/keys/verify", token, &json!({"key": key})).await.json().await.unwrap();
    v["code"].as_str().unwrap_or("VALID").to_owned()
}

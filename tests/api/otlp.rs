//! `TESSERA_OTLP_ENDPOINT`: the `tessera serve` process exports each request's span (method, path,
//! request id, status) to an OpenTelemetry collector over OTLP/HTTP — here a receiver of the test's
//! own that keeps what it is sent.

use std::{
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, http::HeaderMap, routing::post, Router};

use crate::helpers::*;

/// Each request's content type and body.
type Requests = Vec<(String, Vec<u8>)>;

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Requests>>);

impl Received {
    fn all(&self) -> Vec<u8> {
        self.0.lock().unwrap().iter().flat_map(|(_, b)| b.clone()).collect()
    }
}

async fn collector() -> (String, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                keep.0.lock().unwrap().push((ct, body.to_vec()));
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn request_spans_reach_the_collector_without_secrets() {
    let app = spawn_app().await;
    let (endpoint, received) = collector().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .envs(app.env.iter().filter(|(k, _)| k.starts_with("TESSERA_")))
        .env("TESSERA_BIND", format!("127.0.0.1:{port}"))
        .env("TESSERA_OTLP_ENDPOINT", &endpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the process is ready", || async {
        http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let res = http.post(format!("{base}/oauth/token")).basic_auth("admin", Some(ADMIN_SECRET));
    let res = res.form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(http.get(format!("{base}/.well-known/jwks.json")).send().await.unwrap().status(), 200);
    // SIGTERM: a graceful stop flushes the last batch.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let all = eventually(Duration::from_secs(15), "spans exported", || {
        let all = received.all();
        async move { contains(&all, "/.well-known/jwks.json").then_some(all) }
    })
    .await;
    assert!(received.0.lock().unwrap().iter().all(|(ct, _)| ct == "application/x-protobuf"));
    for expected in ["request", "/oauth/token", "tessera", "status"] {
        assert!(contains(&all, expected), "{expected} in the exported spans");
    }
    assert!(!contains(&all, ADMIN_SECRET), "never a secret");
    app.stop().await;
}

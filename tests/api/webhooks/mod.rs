//! Webhooks against a real HTTP receiver on 127.0.0.1: endpoints and their secrets, signed
//! deliveries and retries, exactly one delivery across instances, expiry notices on the test
//! clock, leak reports, and the SSRF guard.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::STANDARD, Engine};
use reqwest::StatusCode;
use ring::hmac;
use serde_json::{json, Value};

use crate::helpers::*;

mod cli;
mod cluster;
mod delivery;
mod endpoints;
mod expiry;
mod leaks;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_owned()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    StatusWith(u16, &'static str, &'static str),
    StatusBody(u16, &'static str),
    /// Never answers (the sender's timeout or death ends it).
    Hang,
}

#[derive(Default)]
struct Inner {
    got: Vec<Received>,
    script: VecDeque<Reply>,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers from a script
/// (200 once the script is used up).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let reply = {
        let mut g = inner.lock().unwrap();
        g.got.push(Received {
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        g.script.pop_front().unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(s) => AxumStatus::from_u16(s).unwrap().into_response(),
        Reply::StatusWith(s, name, value) => (AxumStatus::from_u16(s).unwrap(), [(name, value)], "").into_response(),
        Reply::StatusBody(s, body) => (AxumStatus::from_u16(s).unwrap(), body).into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner }
    }

    /// The next requests are answered with these replies, in order.
    pub fn script(&self, replies: &[Reply]) {
        self.inner.lock().unwrap().script.extend(replies.iter().cloned());
    }

    pub fn got(&self) -> Vec<Received> {
        self.inner.lock().unwrap().got.clone()
    }

    /// What was received of type `t`.
    pub fn of_type(&self, t: &str) -> Vec<Received> {
        self.got().into_iter().filter(|r| r.event_type() == t).collect()
    }

    /// Waits until `n` requests of type `t` arrived, and returns them.
    pub async fn wait_for(&self, t: &str, n: usize, within: Duration) -> Vec<Received> {
        eventually(within, &format!("{n} {t} deliveries"), || async {
            let got = self.of_type(t);
            if got.len() >= n {
                Ok(got)
            } else {
                Err(self.got().iter().map(Received::event_type).collect::<Vec<_>>())
            }
        })
        .await
    }
}

/// Whether `r` carries a valid Standard Webhooks signature under `secret` (`whsec_…`).
pub fn signature_verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let signed = format!("{}.{}.{}", r.id, r.timestamp, r.body);
    r.signature.split(' ').any(|sig| {
        let Some(b64) = sig.strip_prefix("v1,") else { return false };
        let Ok(tag) = STANDARD.decode(b64) else { return false };
        hmac::verify(&key, signed.as_bytes(), &tag).is_ok()
    })
}

/// An instance that may deliver to 127.0.0.1 (the receivers of these tests).
pub async fn spawn_private_ok() -> TestApp {
    TestAppBuilder::new().set("TESSERA_WEBHOOK_ALLOW_PRIVATE", "true").spawn().await
}

/// Creates an endpoint with `token` for `events`; returns (id, secret).
pub async fn endpoint(app: &TestApp, token: &str, url: &str, events: &[&str]) -> (String, String) {
    let res = app.post_json("/v1/webhooks", token, &json!({"url": url, "events": events})).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{:?}", res.text().await);
    let body: Value = res.json().await.unwrap();
    (body["id"].as_str().unwrap().to_owned(), body["secret"].as_str().unwrap().to_owned())
}

/// Creates an API key with `token`; returns the created body.
pub async fn new_key(app: &TestApp, token: &str, extra: Value) -> Value {
    let mut body = json!({"name": "ci", "scopes": ["deploy"], "environment": "live"});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

pub async fn revoke_key(app: &TestApp, token: &str, id: &str) {
    let res = app.post_json(&format!("/v1/keys/{id}/revoke"), token, &json!({"reason": "test"})).await;
    assert_eq!(res.status(), StatusCode::OK);
}

//! `GET /v1/revocations/stream`: Server-Sent Events fed from the instance's own revocation log.

mod follow;
mod lifetime;

use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// One SSE frame: its fields in order (`("", text)` for a comment line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame(pub Vec<(String, String)>);

impl Frame {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn is_comment(&self) -> bool {
        self.0.iter().all(|(k, _)| k.is_empty())
    }
}

/// Reads an event stream frame by frame.
pub struct SseReader {
    res: Response,
    buf: String,
}

impl SseReader {
    pub fn new(res: Response) -> Self {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Self { res, buf: String::new() }
    }

    /// The next frame, or `None` when the server closed the stream; fails after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.next_frame()).await.expect("a frame in time")
    }

    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in raw.lines().filter(|l| !l.is_empty()) {
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    frame.0.push((k.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()));
                }
                return Some(frame);
            }
            match self.res.chunk().await {
                Ok(Some(bytes)) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next revocation event (skipping comments), as (seq, JSON).
    pub async fn next_event(&mut self, within: Duration) -> (i64, Value) {
        loop {
            let frame = self.next(within).await.expect("the stream is open");
            if frame.is_comment() {
                continue;
            }
            assert_eq!(frame.field("event"), Some("revocation"), "{frame:?}");
            let data = frame.field("data").unwrap();
            assert!(!data.contains('\n') && !data.contains(": "), "compact JSON on one line: {data}");
            let ev: Value = serde_json::from_str(data).unwrap();
            let seq: i64 = frame.field("id").unwrap().parse().unwrap();
            assert_eq!(ev["seq"], seq, "id is the event's seq");
            return (seq, ev);
        }
    }

    /// Waits until the server closes the stream (comments may come first).
    pub async fn closed(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                None => return,
                Some(f) if f.is_comment() || f.field("event") == Some("revocation") => continue,
                Some(f) => panic!("unexpected frame {f:?}"),
            }
        }
    }
}

/// Opens the stream with `token`; `last_event_id` and `after` as given.
pub async fn open(app: &TestApp, token: &str, last_event_id: Option<&str>, after: Option<i64>) -> Response {
    let mut url = app.url("/v1/revocations/stream");
    if let Some(a) = after {
        url.push_str(&format!("?after={a}"));
    }
    let mut req = app.http.get(url).bearer_auth(token);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.unwrap()
}

/// Opens the stream and checks that it starts with `retry: 1000`.
pub async fn subscribe(app: &TestApp, token: &str, last_event_id: Option<&str>, after: Option<i64>) -> SseReader {
    let mut r = SseReader::new(open(app, token, last_event_id, after).await);
    let first = r.next(Duration::from_secs(5)).await.expect("a first frame");
    assert_eq!(first.0, vec![("retry".to_owned(), "1000".to_owned())]);
    r
}

/// A client that can make revocation events: it gets access tokens and revokes them.
pub struct Revoker {
    pub id: String,
    pub secret: String,
}

impl Revoker {
    pub async fn new(app: &TestApp) -> Self {
        let (id, secret) = app.create_client(&["client_credentials"], &["revocations:read"]).await;
        Self { id, secret }
    }

    pub async fn token(&self, app: &TestApp) -> String {
        let res = app.token_for(&self.id, &self.secret, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn revoke(&self, app: &TestApp, token: &str) {
        let res = app
            .http
            .post(app.url("/oauth/revoke"))
            .basic_auth(&self.id, Some(&self.secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    /// Makes one `access_token` event; returns the revoked token's jti.
    pub async fn one_event(&self, app: &TestApp) -> String {
        let token = self.token(app).await;
        self.revoke(app, &token).await;
        jti_of(&token)
    }
}

pub fn jti_of(token: &str) -> String {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// The seq of every event in the log so far.
pub async fn all_seqs(app: &TestApp, token: &str) -> Vec<i64> {
    let res = app.get_auth("/v1/revocations?limit=1000", token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await.unwrap();
    page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect()
}

//! Following `GET /v1/revocations/stream` in the background: connect with the verifier's token and
//! `Last-Event-ID` (the last `seq` applied), apply each event, and reconnect — after a loss, with
//! a growing delay, and shortly before the token expires, with a fresh one — so that no event is
//! skipped or applied twice. A `reset` (the cursor is older than the log) rereads the whole log.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;

use crate::{
    apikey::ApiKeys,
    client::Tessera,
    jwks::Jwks,
    revoked::{Effect, Event, Revoked},
};

/// Longest silence before the connection is presumed dead (Tessera sends a comment at least
/// every 15 s).
const SILENCE: Duration = Duration::from_secs(35);
/// First and longest delay between reconnection attempts.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// What the follower changes.
pub(crate) struct Sinks {
    pub tessera: Arc<Tessera>,
    pub revoked: Arc<Revoked>,
    pub jwks: Arc<Jwks>,
    pub keys: Arc<ApiKeys>,
}

impl Sinks {
    /// Applies `ev` unless it is already applied.
    pub fn apply(&self, ev: &Event) {
        if ev.seq <= self.revoked.applied_seq() {
            return;
        }
        match self.revoked.apply(ev) {
            Effect::None => {}
            Effect::ApiKey(id) => self.keys.forget(&id),
            Effect::SigningKey(kid) => self.jwks.remove(&kid),
        }
    }

    /// Reads and applies every kept event after the last applied.
    pub async fn catch_up(&self) -> Result<(), crate::Error> {
        let (events, _) = self.tessera.events_after(self.revoked.applied_seq()).await?;
        for ev in &events {
            self.apply(ev);
        }
        Ok(())
    }
}

/// Follows the stream until `closed` reports its sender gone (the verifier was dropped).
pub(crate) async fn run(sinks: Sinks, mut closed: watch::Receiver<()>) {
    let mut delay = FIRST_DELAY;
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        let outcome = tokio::select! {
            _ = closed.changed() => return,
            o = follow_once(&sinks, &mut prune) => o,
        };
        sinks.revoked.mark_down();
        match outcome {
            Outcome::Renew => continue,
            Outcome::Reset => {
                // Everything after what is kept is reread; the sets only grow, so applying the
                // older events again is harmless, and API-key answers may be stale: drop them.
                sinks.keys.forget_all();
                match sinks.tessera.events_after(0).await {
                    Ok((events, _)) => events.iter().for_each(|ev| sinks.apply(ev)),
                    Err(e) => tracing::warn!(error = %e, "tessera-verifier: rereading the revocation log failed"),
                }
            }
            Outcome::Connected => delay = FIRST_DELAY,
            Outcome::Failed(why) => {
                tracing::warn!(why, "tessera-verifier: revocation stream unavailable; retrying");
                tokio::select! {
                    _ = closed.changed() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

enum Outcome {
    /// The token is due for renewal: reconnect at once.
    Renew,
    /// The cursor was older than the log.
    Reset,
    /// Was connected, then lost: reconnect at once.
    Connected,
    /// Could not connect.
    Failed(String),
}

async fn follow_once(sinks: &Sinks, prune: &mut tokio::time::Interval) -> Outcome {
    let token = match sinks.tessera.token().await {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let res = sinks
        .tessera
        .http
        .get(&sinks.tessera.stream_url)
        .bearer_auth(&token.value)
        .header("Last-Event-ID", sinks.revoked.applied_seq().to_string())
        .header(http::header::ACCEPT, "text/event-stream")
        .send()
        .await;
    let mut res = match res {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            if r.status() == http::StatusCode::UNAUTHORIZED {
                sinks.revoked.count_refusal();
                sinks.tessera.drop_token().await;
            }
            return Outcome::Failed(format!("stream answered {}", r.status()));
        }
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    sinks.revoked.mark_up();
    let renew = tokio::time::Instant::from_std(token.renew_at);
    let mut parser = Parser::default();
    loop {
        let chunk = tokio::select! {
            () = tokio::time::sleep_until(renew) => return Outcome::Renew,
            _ = prune.tick() => {
                sinks.revoked.prune();
                continue;
            }
            c = tokio::time::timeout(SILENCE, res.chunk()) => c,
        };
        let bytes = match chunk {
            Ok(Ok(Some(bytes))) => bytes,
            // Closed by Tessera (token revoked or expired, shutdown), an error, or silence.
            Ok(Ok(None) | Err(_)) | Err(_) => return Outcome::Connected,
        };
        for frame in parser.push(&bytes) {
            match frame.event.as_deref() {
                Some("revocation") => match serde_json::from_str::<Event>(&frame.data) {
                    Ok(ev) => sinks.apply(&ev),
                    Err(e) => tracing::warn!(error = %e, "tessera-verifier: unreadable revocation event"),
                },
                Some("reset") => return Outcome::Reset,
                _ => {}
            }
        }
    }
}

/// One server-sent event (only the fields the verifier uses).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Frame {
    pub event: Option<String>,
    pub data: String,
}

/// An incremental `text/event-stream` parser (WHATWG HTML §9.2.6), for the fields used here.
#[derive(Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    current: Frame,
    has_data: bool,
}

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        self.buf.extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let frame = std::mem::take(&mut self.current);
                if self.has_data || frame.event.is_some() {
                    frames.push(frame);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_are_put_together_and_comments_skipped() {
        let mut p = Parser::default();
        assert!(p.push(b"retry: 1000\n\n: keep-alive\n\nevent: revoc").is_empty());
        let frames = p.push(b"ation\nid: 7\ndata: {\"seq\":7}\n\nevent: reset\ndata: {\"oldest_seq\":3}\n\n");
        assert_eq!(
            frames,
            vec![
                Frame { event: Some("revocation".into()), data: "{\"seq\":7}".into() },
                Frame { event: Some("reset".into()), data: "{\"oldest_seq\":3}".into() },
            ]
        );
    }
}

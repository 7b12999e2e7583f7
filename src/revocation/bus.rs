//! The fan-out bus: Redis pub/sub + stream when configured, an in-process broadcast otherwise.
//! One small interface for both, so the relay and the consumers do not care which one runs.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::redis_conn::LazyConnection;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What the bus hands to this instance's consumers.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// One event as published (JSON text).
    Event(Arc<str>),
    /// The subscription was (re)established: messages may have been missed, catch up from Postgres.
    Resync,
}

/// Publishing failed; the caller keeps the event and tries again later.
#[derive(Debug, thiserror::Error)]
#[error("bus unavailable: {0}")]
pub struct BusError(String);

/// Health of the bus for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusStatus {
    /// No Redis configured: the in-process bus serves one instance.
    InProcess,
    /// Redis answers.
    Up,
    /// Redis is configured but unreachable; events wait in Postgres.
    Down,
}

impl BusStatus {
    /// Lower-case name for JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProcess => "in_process",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Redis (or in-process) fan-out.
#[derive(Clone)]
pub struct Bus {
    local: broadcast::Sender<BusMessage>,
    redis: Option<Arc<RedisBus>>,
}

struct RedisBus {
    conn: LazyConnection,
    up: AtomicBool,
    /// Whether the state has been observed once (the first observation is always logged).
    seen: AtomicBool,
    /// The URL without its password, for log lines.
    shown: String,
    channel: String,
    stream: String,
}

/// Largest number of entries kept in the Redis stream (approximate trimming).
pub const STREAM_MAX_LEN: usize = 100_000;
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

impl Bus {
    /// An in-process bus for single-instance mode and tests.
    pub fn in_process() -> Self {
        let (local, _) = broadcast::channel(4096);
        Self { local, redis: None }
    }

    /// A Redis bus; it connects in the background and reconnects by itself.
    pub fn redis(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let conn = LazyConnection::open(url, REDIS_TIMEOUT)?;
        let (local, _) = broadcast::channel(4096);
        Ok(Self {
            local,
            redis: Some(Arc::new(RedisBus {
                conn,
                up: AtomicBool::new(false),
                seen: AtomicBool::new(false),
                shown: crate::secrets::RedactedUrl::new(url).redacted(),
                channel: format!("{prefix}:revocations"),
                stream: format!("{prefix}:revocations:stream"),
            })),
        })
    }

    /// The pub/sub channel name.
    pub fn channel(&self) -> Option<&str> {
        self.redis.as_ref().map(|r| r.channel.as_str())
    }

    /// The stream key.
    pub fn stream(&self) -> Option<&str> {
        self.redis.as_ref().map(|r| r.stream.as_str())
    }

    /// Receives what this instance should apply.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.local.subscribe()
    }

    /// Current health.
    pub fn status(&self) -> BusStatus {
        match &self.redis {
            None => BusStatus::InProcess,
            Some(r) if r.up.load(Ordering::Relaxed) => BusStatus::Up,
            Some(_) => BusStatus::Down,
        }
    }

    /// Checks Redis with a PING (for `/readyz`), updating the status.
    pub async fn ping(&self) -> BusStatus {
        let Some(r) = &self.redis else {
            return BusStatus::InProcess;
        };
        let ok = match r.conn.get(Duration::from_secs(2)).await {
            Some(mut conn) => matches!(
                tokio::time::timeout(REDIS_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut conn)).await,
                Ok(Ok(_))
            ),
            None => false,
        };
        r.set_up(ok);
        self.status()
    }

    /// Publishes one event to the channel and appends it to the capped stream.
    pub async fn publish(&self, seq: i64, payload: &str) -> Result<(), BusError> {
        let Some(r) = &self.redis else {
            // Nobody listening is fine: consumers also catch up from Postgres.
            let _ = self.local.send(BusMessage::Event(Arc::from(payload)));
            return Ok(());
        };
        let mut conn = r.conn.get(Duration::from_secs(2)).await.ok_or_else(|| BusError("not connected".into()))?;
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&r.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg("*")
            .arg("seq")
            .arg(seq)
            .arg("event")
            .arg(payload)
            .ignore()
            .cmd("PUBLISH")
            .arg(&r.channel)
            .arg(payload)
            .ignore();
        let res = tokio::time::timeout(REDIS_TIMEOUT, conn.send(&pipe)).await;
        match res {
            Ok(Ok(())) => {
                r.set_up(true);
                Ok(())
            }
            Ok(Err(e)) => {
                r.set_up(false);
                Err(BusError(e.to_string()))
            }
            Err(_) => {
                r.set_up(false);
                Err(BusError("timed out".into()))
            }
        }
    }

    /// Runs the Redis subscriber until shutdown: forwards channel messages to local consumers,
    /// reconnecting with backoff and asking them to resync after every (re)connection.
    pub async fn run_subscriber(self, shutdown: CancellationToken) {
        let Some(r) = self.redis.clone() else { return };
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                let mut pubsub = r.conn.client().await?.get_async_pubsub().await?;
                pubsub.subscribe(&r.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(mut pubsub)) => {
                    backoff = Duration::from_millis(100);
                    r.set_up(true);
                    tracing::info!(channel = %r.channel, "subscribed to revocation channel");
                    let _ = self.local.send(BusMessage::Resync);
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            msg = messages.next() => match msg {
                                Some(msg) => {
                                    if let Ok(payload) = msg.get_payload::<String>() {
                                        let _ = self.local.send(BusMessage::Event(Arc::from(payload)));
                                    }
                                }
                                None => break,
                            }
                        }
                    }
                    r.set_up(false);
                    tracing::warn!("revocation subscription lost; reconnecting");
                }
                Ok(Err(e)) => {
                    r.set_up(false);
                    tracing::debug!(error = %e, "redis subscribe failed");
                }
                Err(_) => r.set_up(false),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

impl RedisBus {
    /// Records whether Redis answers, and says so in the log on every change (and the first time):
    /// an unreachable Redis is not an outage, but an operator must be able to see it.
    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        let first = !self.seen.swap(true, Ordering::Relaxed);
        if first || was != up {
            if up {
                tracing::info!(redis = %self.shown, "TESSERA_REDIS_URL: Redis answers; revocations fan out through it");
            } else {
                tracing::warn!(
                    redis = %self.shown,
                    "TESSERA_REDIS_URL: Redis does not answer; instances learn revocations from Postgres \
                     (within a second) and events wait there until it is back"
                );
            }
        }
    }
}

//! Postgres notifications as a wake-up for background loops, on a `LISTEN` connection that is made
//! again whenever it is lost.
//!
//! The outbox relay and the webhook dispatcher work when a notification says there is work, and at
//! a poll interval besides: a notification is only a hint, so a missed one costs at most one poll.
//! What must not happen is to lose the listener for good. A loop whose listener could not be made
//! again while Postgres was away used to poll for the rest of the process: after a Postgres restart,
//! an instance leading the relay sequenced events only every 500 ms, so revocations reached other
//! instances late whenever it held the relay lock. [`Wakeups`] tries again at every poll until it
//! listens.
//!
//! Two ways back, then: sqlx's listener reconnects (and listens again) by itself on a later receive
//! when its socket was closed and the pool can hand out a connection by then; when a receive fails
//! instead (a FATAL from a shutting-down server, or no connection within the pool's acquire
//! timeout), the listener is dropped here and a new one made at a later poll.

use std::time::Duration;

use sqlx::{
    postgres::{PgListener, PgNotification},
    PgPool,
};

/// How long making a listener may take before the attempt is given up until the next poll.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A listener on `channels`, or `None` when Postgres cannot be reached (or does not answer within
/// `timeout`).
pub async fn listener(db: &PgPool, channels: &[&str], timeout: Duration) -> Option<PgListener> {
    let connect = async {
        let mut l = PgListener::connect_with(db).await.ok()?;
        l.listen_all(channels.iter().copied()).await.ok()?;
        Some(l)
    };
    tokio::time::timeout(timeout, connect).await.ok().flatten()
}

/// Why [`Wakeups::wait`] returned.
#[derive(Debug)]
pub enum Wake {
    /// A notification on one of the channels.
    Notified(PgNotification),
    /// The poll interval passed without one (or there is no listener yet).
    Poll,
    /// The connection was lost, or a lost one was made again: notifications sent in between were
    /// missed, so the caller should look for work now.
    Lost,
}

/// A self-healing `LISTEN` on fixed channels (see the module documentation).
pub struct Wakeups {
    db: PgPool,
    channels: &'static [&'static str],
    listener: Option<PgListener>,
}

impl Wakeups {
    /// Starts listening on `channels`; when Postgres cannot be reached now, [`Wakeups::wait`] keeps
    /// trying.
    pub async fn new(db: PgPool, channels: &'static [&'static str]) -> Self {
        let listener = listener(&db, channels, CONNECT_TIMEOUT).await;
        Self { db, channels, listener }
    }

    /// Whether a listener is connected now.
    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Waits for a notification, at most `poll`. Without a listener it waits `poll` and then
    /// tries to make one ([`Wake::Lost`] when that worked, so the caller catches up on what was
    /// missed). Cancel-safe in the ways the loops use it (a `select!` with their shutdown).
    pub async fn wait(&mut self, poll: Duration) -> Wake {
        let Some(l) = self.listener.as_mut() else {
            tokio::time::sleep(poll).await;
            self.listener = listener(&self.db, self.channels, CONNECT_TIMEOUT).await;
            return if self.listener.is_some() { Wake::Lost } else { Wake::Poll };
        };
        match tokio::time::timeout(poll, l.try_recv()).await {
            Err(_) => Wake::Poll,
            Ok(Ok(Some(n))) => Wake::Notified(n),
            // sqlx has connected again and listens on the same channels.
            Ok(Ok(None)) => Wake::Lost,
            // It could not: drop it, and make a new one at the next call.
            Ok(Err(_)) => {
                self.listener = None;
                Wake::Lost
            }
        }
    }
}

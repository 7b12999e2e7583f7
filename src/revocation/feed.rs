//! The revocation feed as resource services read it: sequenced events, paged by `seq`
//! (`GET /v1/revocations`) or followed live (`GET /v1/revocations/stream`, see [`super::stream`]).

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{events_after, stream::Follow, RevocationEvent, RevokedSet};
use crate::error::{Error, Result};

/// Where a follower starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Only events sequenced after the subscription opened.
    Latest,
    /// Every event with `seq` greater than this (0 or more).
    After(i64),
}

/// Reads the sequenced revocation log.
#[derive(Clone)]
pub struct Feed {
    db: PgPool,
    /// What this instance has applied: followers never run ahead of it.
    revoked: Arc<RevokedSet>,
    heartbeat: Duration,
    shutdown: CancellationToken,
}

impl Feed {
    /// The feed of `db`; followers wake when `revoked` moves forward, send a heartbeat every
    /// `heartbeat` and end when `shutdown` is cancelled.
    pub fn new(db: PgPool, revoked: Arc<RevokedSet>, heartbeat: Duration, shutdown: CancellationToken) -> Self {
        Self { db, revoked, heartbeat, shutdown }
    }

    /// Up to `limit` (1 to 1 000) events with `seq` greater than `after` (0 or more), in order.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `after` when negative; [`Error::CursorExpired`] when events after
    /// `after` are no longer kept.
    pub async fn page(&self, after: i64, limit: i64) -> Result<Vec<RevocationEvent>> {
        if after < 0 {
            return Err(Error::invalid("after: must be 0 or more"));
        }
        self.check_kept(after).await?;
        events_after(&self.db, after, limit).await
    }

    /// Fails when events right after `after` have been deleted: a reader resuming there would skip
    /// them. `after = 0` means "from the oldest kept" and never expires.
    async fn check_kept(&self, after: i64) -> Result<()> {
        if after == 0 {
            return Ok(());
        }
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT min(seq) FROM revocation_events").fetch_one(&self.db).await?;
        match oldest {
            Some(oldest_seq) if after < oldest_seq - 1 => Err(Error::CursorExpired { oldest_seq }),
            _ => Ok(()),
        }
    }

    /// Follows the log from `cursor`: every event this instance has applied after it, in `seq`
    /// order, then each new one as it is applied, with heartbeats. `authorised` is asked after every
    /// wake-up and at least once a second; the follow ends when it answers false (the subscriber's
    /// token expired or was revoked), on shutdown, or when the log cannot be read (the subscriber
    /// resumes from its last `seq`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a negative cursor; [`Error::Database`] when the start position
    /// cannot be read. An expired cursor is not an error here: the follow yields one
    /// [`super::stream::Item::Reset`] and ends.
    pub async fn follow<A>(&self, cursor: Cursor, authorised: A) -> Result<Follow<A>>
    where
        A: Fn() -> bool + Send + 'static,
    {
        let start = match cursor {
            Cursor::Latest => super::last_seq(&self.db).await?,
            Cursor::After(n) if n < 0 => return Err(Error::invalid("Last-Event-ID/after: must be 0 or more")),
            Cursor::After(n) => match self.check_kept(n).await {
                Err(Error::CursorExpired { oldest_seq }) => {
                    return Ok(Follow::reset(self.clone(), oldest_seq, authorised));
                }
                other => other.map(|()| n)?,
            },
        };
        Ok(Follow::new(self.clone(), start, authorised))
    }

    pub(super) fn db(&self) -> &PgPool {
        &self.db
    }
    pub(super) fn revoked(&self) -> &RevokedSet {
        &self.revoked
    }
    pub(super) fn heartbeat(&self) -> Duration {
        self.heartbeat
    }
    pub(super) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }
}

//! The revocation feed as resource services read it: sequenced events, paged by `seq`
//! (`GET /v1/revocations`) or followed live (`GET /v1/revocations/stream`, see [`super::stream`]).

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{events_after, RevocationEvent, RevokedSet};
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
    pub(super) async fn check_kept(&self, after: i64) -> Result<()> {
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

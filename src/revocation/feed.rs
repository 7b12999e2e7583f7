//! The revocation feed as resource services read it: sequenced events, paged by `seq`.

use sqlx::PgPool;

use super::{events_after, RevocationEvent};
use crate::error::{Error, Result};

/// Reads the sequenced revocation log (`GET /v1/revocations`).
#[derive(Clone)]
pub struct Feed {
    db: PgPool,
}

impl Feed {
    /// The feed of `db`.
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Up to `limit` (1 to 1 000) events with `seq` greater than `after` (0 or more), in order.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `after` or `limit` when out of range.
    pub async fn page(&self, after: i64, limit: i64) -> Result<Vec<RevocationEvent>> {
        if after < 0 {
            return Err(Error::invalid("after: must be 0 or more"));
        }
        events_after(&self.db, after, limit).await
    }
}

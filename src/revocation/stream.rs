//! Following the revocation log live (the domain half of `GET /v1/revocations/stream`).
//!
//! A follower reads from Postgres only events this instance has already applied (`seq` at most
//! [`RevokedSet::applied_seq`](super::RevokedSet::applied_seq)), and wakes when that moves. Because
//! `seq` is given in commit order after commit, every event up to the applied position is in the
//! table, so reading `seq > cursor AND seq <= applied` in order neither skips nor repeats one,
//! whatever the subscriber's reconnections.

use std::{collections::VecDeque, time::Duration};

use futures::Stream;
use tokio::time::{Instant, MissedTickBehavior};

use super::{feed::Feed, from_row, Cursor, EventRow, RevocationEvent};
use crate::error::{Error, Result};

/// Events read from Postgres at once.
const BATCH: i64 = 500;
/// Longest time between two checks that the subscriber is still authorised.
const AUTH_CHECK: Duration = Duration::from_secs(1);

/// What a follower yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// The next event, in `seq` order.
    Event(RevocationEvent),
    /// Nothing happened for a heartbeat interval (a comment line on the wire).
    Heartbeat,
    /// The cursor is older than what is kept; the follow ends after this.
    Reset {
        /// The oldest `seq` still kept.
        oldest_seq: i64,
    },
}

/// A follow of the revocation log, from [`Feed::follow`]; turn it into a stream with
/// [`Follow::into_stream`].
pub struct Follow<A> {
    feed: Feed,
    /// Last `seq` yielded.
    sent: i64,
    /// Last `seq` read from Postgres (events between `sent` and here wait in `pending`).
    read: i64,
    pending: VecDeque<RevocationEvent>,
    reset: Option<i64>,
    authorised: A,
}

impl<A: Fn() -> bool + Send + 'static> Follow<A> {
    pub(super) fn new(feed: Feed, start: i64, authorised: A) -> Self {
        Self { feed, sent: start, read: start, pending: VecDeque::new(), reset: None, authorised }
    }

    pub(super) fn reset(feed: Feed, oldest_seq: i64, authorised: A) -> Self {
        Self { feed, sent: 0, read: 0, pending: VecDeque::new(), reset: Some(oldest_seq), authorised }
    }

    /// The `seq` after which the follow starts.
    pub fn start(&self) -> i64 {
        self.sent
    }

    /// The follow as a stream of [`Item`]s; it ends as [`Feed::follow`] describes.
    pub fn into_stream(self) -> impl Stream<Item = Item> + Send + 'static {
        let heartbeat = self.feed.heartbeat();
        let mut beat = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut check = tokio::time::interval_at(Instant::now() + AUTH_CHECK, AUTH_CHECK);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let applied = self.feed.revoked().watch_applied();
        futures::stream::unfold(
            (self, beat, check, applied, false),
            |(mut f, mut beat, mut check, mut applied, done)| async move {
                if done {
                    return None;
                }
                if let Some(oldest_seq) = f.reset {
                    return Some((Item::Reset { oldest_seq }, (f, beat, check, applied, true)));
                }
                loop {
                    if let Some(ev) = f.pending.pop_front() {
                        f.sent = ev.seq;
                        return Some((Item::Event(ev), (f, beat, check, applied, false)));
                    }
                    if !(f.authorised)() {
                        return None;
                    }
                    let upto = f.feed.revoked().applied_seq();
                    if upto > f.read {
                        match f.read_until(upto).await {
                            Ok(()) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e, after = f.sent, "revocation stream: the log cannot be read; closing");
                                return None;
                            }
                        }
                    }
                    tokio::select! {
                        () = f.feed.shutdown().cancelled() => return None,
                        changed = applied.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        _ = check.tick() => {}
                        _ = beat.tick() => return Some((Item::Heartbeat, (f, beat, check, applied, false))),
                    }
                }
            },
        )
    }

    /// Reads the next batch of events after `read`, up to `upto`, into `pending`.
    async fn read_until(&mut self, upto: i64) -> crate::error::Result<()> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT seq, kind, subject_id, jti, kid, expires_at, revoked_at, reason FROM revocation_events
             WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3",
        )
        .bind(self.read)
        .bind(upto)
        .bind(BATCH)
        .fetch_all(self.feed.db())
        .await?;
        let full = rows.len() as i64 == BATCH;
        let last = rows.last().map(|r| r.0);
        self.pending.extend(rows.into_iter().filter_map(from_row));
        // A short batch means everything up to `upto` is read (a row of a kind this build does not
        // know is skipped, never re-read).
        self.read = if full { last.unwrap_or(upto) } else { upto };
        Ok(())
    }
}

impl Feed {
    /// Follows the log from `cursor`: every event this instance has applied after it, in `seq`
    /// order, then each new one as it is applied, with heartbeats. `authorised` is asked after every
    /// wake-up and at least once a second; the follow ends when it answers false (the subscriber's
    /// token expired or was revoked), on shutdown, or when the log cannot be read (the subscriber
    /// resumes from its last `seq`).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a negative cursor; [`Error::Database`] when the start position
    /// cannot be read. An expired cursor is not an error here: the follow yields one
    /// [`Item::Reset`] and ends.
    pub async fn follow<A>(&self, cursor: Cursor, authorised: A) -> Result<Follow<A>>
    where
        A: Fn() -> bool + Send + 'static,
    {
        let start = match cursor {
            Cursor::Latest => super::last_seq(self.db()).await?,
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
}

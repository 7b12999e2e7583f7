//! The one source of "now": real time plus an offset that tests may advance.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use time::OffsetDateTime;

/// Wall clock shared by every component of one application.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// The current time, truncated to microseconds (Postgres precision).
    pub fn now(&self) -> OffsetDateTime {
        let now = OffsetDateTime::now_utc() + time::Duration::seconds(self.offset_secs.load(Ordering::Relaxed));
        let micros = now.microsecond();
        now.replace_microsecond(micros).unwrap_or(now)
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// Moves this clock forward (tests of expiry without sleeping).
    pub fn advance(&self, by: std::time::Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.offset_secs.fetch_add(secs, Ordering::Relaxed);
    }
}

//! Password sign-in with a lockout that parallel guesses cannot outrun.
//!
//! Every attempt first *reserves* a number in Postgres (`login_attempts`, one row per lower-cased
//! username, existing or not), in one atomic upsert: N concurrent attempts on any number of
//! instances get N distinct numbers. Only attempts numbered within `TESSERA_LOGIN_MAX_FAILURES`
//! are checked; the rest are refused without hashing, exactly like a wrong password, and lock the
//! name for `TESSERA_LOGIN_LOCKOUT`. A successful check gives back its own number only, so the
//! failures and in-flight checks of one window never exceed the limit, whoever signs in between.
//!
//! An attempt that reaches no verdict — Postgres went away after the reservation, the request timed
//! out or its client left — is no wrong password: its number is given back too, in the background
//! when the request is gone, retrying while Postgres is away. Otherwise a few sign-ins cut short
//! by an outage would lock a user out who never typed a wrong password. The client learns nothing
//! from such an attempt (it gets no verdict), so giving it back buys a guesser nothing.

use std::{net::IpAddr, time::Duration};

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::User;
use crate::{config::Config, error::Result, passwords, throttle::SourceLimiter};

type LoginRow = (Uuid, String, Vec<String>, OffsetDateTime, String);

/// One reserved attempt.
struct Reservation {
    number: i32,
    window_start: OffsetDateTime,
    locked: bool,
}

/// A reserved attempt still in flight. Unless settled as a failed check ([`Held::keep`]), its
/// number is given back: at once by [`Held::give_back`], or in the background when it is dropped
/// (the request ended without a verdict).
struct Held {
    db: PgPool,
    key: String,
    window_start: OffsetDateTime,
    settled: bool,
}

impl Held {
    fn new(db: &PgPool, key: &str, window_start: OffsetDateTime) -> Self {
        Self { db: db.clone(), key: key.to_owned(), window_start, settled: false }
    }

    /// The check failed: the attempt counts.
    fn keep(mut self) {
        self.settled = true;
    }

    /// Gives the number back now (one try, awaited); when Postgres refuses, retries go on in the
    /// background. The give-back runs in a task of its own, exactly once: awaited in the caller, a
    /// caller cancelled after its UPDATE was sent would have given the number back a second time
    /// from `drop`, freeing a parallel attempt's number too.
    async fn give_back(mut self) {
        self.settled = true;
        let (db, key, window_start) = (self.db.clone(), std::mem::take(&mut self.key), self.window_start);
        let (first_try, done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if release_attempt(&db, &key, window_start).await.is_ok() {
                let _ = first_try.send(());
                return;
            }
            drop(first_try);
            give_back_eventually(db, key, window_start).await;
        });
        let _ = done.await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let (db, key, window_start) = (self.db.clone(), std::mem::take(&mut self.key), self.window_start);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(give_back_eventually(db, key, window_start));
        }
    }
}

/// Gives an attempt back, retrying with backoff (Postgres may be why it reached no verdict) for
/// about ten minutes; after that it counts until its window ends, and the log says so.
async fn give_back_eventually(db: PgPool, key: String, window_start: OffsetDateTime) {
    let mut wait = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        match release_attempt(&db, &key, window_start).await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(error = %e, "a sign-in attempt that reached no verdict could not be given back");
                return;
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// What a reservation needs of the configuration, copied so the reservation can run in a task of
/// its own.
#[derive(Clone, Copy)]
struct Limits {
    /// `TESSERA_LOGIN_FAILURE_WINDOW`.
    window: Duration,
    /// `TESSERA_LOGIN_MAX_FAILURES`.
    max: i32,
    /// `TESSERA_LOGIN_LOCKOUT`.
    lockout: time::Duration,
}

impl Limits {
    fn of(config: &Config) -> Self {
        Self {
            window: config.login_failure_window,
            max: i32::try_from(config.login_max_failures).unwrap_or(i32::MAX),
            lockout: time::Duration::try_from(config.login_lockout).unwrap_or(time::Duration::MINUTE),
        }
    }
}

impl Reservation {
    /// Whether this attempt may be checked: the name is not locked and its number is within the limit.
    fn checkable(&self, limits: Limits) -> bool {
        !self.locked && self.number <= limits.max
    }
}

/// Reserves the next attempt for `key`. The window restarts when it has passed or a lock ended.
async fn reserve(db: &PgPool, limits: Limits, now: OffsetDateTime, key: &str) -> Result<Reservation> {
    let window_start = now - limits.window;
    let (number, window, locked_until): (i32, OffsetDateTime, Option<OffsetDateTime>) = sqlx::query_as(
        "INSERT INTO login_attempts AS a (username_key, window_start, attempts, locked_until)
         VALUES ($1, $2, 1, NULL)
         ON CONFLICT (username_key) DO UPDATE SET
            attempts = CASE WHEN a.locked_until > $2 THEN a.attempts + 1
                            WHEN a.locked_until IS NOT NULL OR a.window_start <= $3 THEN 1
                            ELSE a.attempts + 1 END,
            window_start = CASE WHEN a.locked_until > $2 THEN a.window_start
                                WHEN a.locked_until IS NOT NULL OR a.window_start <= $3 THEN $2
                                ELSE a.window_start END,
            locked_until = CASE WHEN a.locked_until > $2 THEN a.locked_until
                                WHEN a.locked_until IS NOT NULL OR a.window_start <= $3 THEN NULL
                                WHEN a.attempts + 1 > $4 THEN $2 + $5
                                ELSE NULL END
         RETURNING attempts, window_start, locked_until",
    )
    .bind(key)
    .bind(now)
    .bind(window_start)
    .bind(limits.max)
    .bind(limits.lockout)
    .fetch_one(db)
    .await?;
    Ok(Reservation { number, window_start: window, locked: locked_until.is_some_and(|t| t > now) })
}

/// Reserves in a task of its own, and holds a checkable attempt from the moment it is reserved.
/// The upsert commits even when the caller is cancelled while it runs (its client went away, the
/// request timed out): the attempt then reaches no verdict, and the [`Held`] in the output nobody
/// awaits any more is dropped with it, which gives its number back.
async fn reserve_held(
    db: &PgPool,
    limits: Limits,
    now: OffsetDateTime,
    key: &str,
) -> Result<(Reservation, Option<Held>)> {
    let (db, key) = (db.clone(), key.to_owned());
    tokio::spawn(async move {
        let r = reserve(&db, limits, now, &key).await?;
        let held = r.checkable(limits).then(|| Held::new(&db, &key, r.window_start));
        Ok((r, held))
    })
    .await
    .map_err(|e| crate::error::Error::Internal(format!("sign-in reservation task: {e}")))?
}

/// The services a sign-in needs besides the database.
pub struct Guards<'a> {
    /// Validated configuration (the lockout settings).
    pub config: &'a Config,
    /// The bounded Argon2 pool.
    pub argon2: &'a passwords::Pool,
    /// The per-source allowance of failed or in-flight checks.
    pub guessing: &'a SourceLimiter,
}

/// Checks a username and password for a caller at `source`. `None` for every failure — unknown
/// user, wrong password, locked name, attempts past the limit — which the caller cannot tell
/// apart. Attempts past the limit cost no Argon2; the others cost one run each, known user or not.
/// `Err(TooManyAttempts)` when the source's allowance is spent (nothing else is done then).
pub async fn authenticate(
    db: &PgPool,
    guards: &Guards<'_>,
    now: OffsetDateTime,
    source: IpAddr,
    username: &str,
    password: &str,
) -> Result<Option<User>> {
    let Guards { config, argon2, guessing } = *guards;
    // Postgres text cannot hold U+0000, and no stored name is longer than 128 bytes: no such user
    // can exist, so nothing is counted and nothing is hashed (that reveals no account).
    if username.len() > 128 || password.len() > 4096 || username.contains('\0') {
        return Ok(None);
    }
    // Held while the check runs; kept (a counted failure) unless it succeeds.
    let slot = guessing.admit(source).await?;
    let key = username.to_lowercase();
    // From the reservation until a verdict, an error or a dropped request gives the number back.
    let limits = Limits::of(config);
    let (reserved, held) = reserve_held(db, limits, now, &key).await?;
    let Some(held) = held else {
        return Ok(None);
    };
    let row: Option<LoginRow> = sqlx::query_as(
        "SELECT id, username, scopes, created_at, password_hash FROM users
         WHERE lower(username) = lower($1) AND deleted_at IS NULL",
    )
    .bind(username)
    .fetch_optional(db)
    .await?;
    let (user, hash) = match row {
        Some((id, username, scopes, created_at, hash)) => (Some(User { id, username, scopes, created_at }), Some(hash)),
        None => (None, None),
    };
    let ok = match argon2.verify(Some(source), hash, password.to_owned()).await {
        Ok(ok) => ok,
        Err(e) => {
            // Not a failed check (no worker, or our fault): neither the name nor the source pays.
            slot.release().await;
            held.give_back().await;
            return Err(e);
        }
    };
    if ok {
        slot.release().await;
        // Only this attempt's own number comes back: parallel wrong guesses keep theirs.
        held.give_back().await;
        return Ok(user);
    }
    held.keep();
    if reserved.number >= limits.max {
        // The last allowed check failed: the lock starts now, not at the next attempt.
        let locked = sqlx::query(
            "UPDATE login_attempts SET locked_until = $3
             WHERE username_key = $1 AND window_start = $2 AND (locked_until IS NULL OR locked_until < $3)",
        )
        .bind(&key)
        .bind(reserved.window_start)
        .bind(now + limits.lockout)
        .execute(db)
        .await?;
        if let (Some(u), 1) = (&user, locked.rows_affected()) {
            tracing::warn!(user_id = %u.id, "account locked after repeated failed logins");
        }
    }
    Ok(None)
}

/// Gives back one reserved attempt of the window that began at `window_start`.
async fn release_attempt(db: &PgPool, key: &str, window_start: OffsetDateTime) -> Result<()> {
    sqlx::query(
        "UPDATE login_attempts SET attempts = attempts - 1
         WHERE username_key = $1 AND window_start = $2 AND attempts > 0",
    )
    .bind(key)
    .bind(window_start)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets attempt rows whose window and lock have both passed.
pub async fn purge(db: &PgPool, config: &Config, now: OffsetDateTime) -> Result<u64> {
    let done = sqlx::query(
        "DELETE FROM login_attempts WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < $2)",
    )
    .bind(now - config.login_failure_window)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

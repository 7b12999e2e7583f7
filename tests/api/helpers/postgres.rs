//! Postgres for the tests: the server, the template database and each test's clone, and the
//! connection budget.
//!
//! Postgres is shared by everything on the machine (`max_connections` 100 here), so the suite keeps
//! within a budget: each instance's pool holds at most [`POOL_SIZE`] connections, and at most
//! [`max_tests_with_a_database`] tests hold a database (and its instances) at once, however many
//! test threads run. When Postgres has no connection left all the same, a test fails saying so
//! (see [`no_free_connection`]) rather than with a bare `PoolTimedOut`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Server URL of Postgres for tests (`DATABASE_URL` without a database name is fine).
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // Strip the database name: we choose our own.
    match url.rfind('/') {
        Some(i) if i > "postgres://".len() => url[..i].to_owned(),
        _ => url,
    }
}

/// A connection to the server's `postgres` database.
pub async fn admin_connection() -> PgConnection {
    connect(&format!("{}/postgres", server_url())).await
}

/// A connection for the test itself; when Postgres refuses, the failure says why in plain words
/// (the machine's Postgres is shared, and `max_connections` is a common reason).
pub async fn connect(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(c) => c,
        Err(e) => {
            let said = e.to_string();
            if is_full(&said) {
                panic!("{}", no_free_connection(&said).await);
            }
            let why = if said.contains("Connection refused") {
                "nothing answers at the Postgres address: start it (scripts/test does) or set DATABASE_URL"
            } else {
                "Postgres refused the test's connection"
            };
            panic!("{why}: {said}");
        }
    }
}

/// Whether Postgres's (or the pool's) words mean that no connection was to be had: Postgres's own
/// refusals, or a pool that gave up waiting for one (sqlx retries "too many clients" until its
/// acquire timeout, then says only `PoolTimedOut`).
pub(super) fn is_full(said: &str) -> bool {
    said.contains("too many clients")
        || said.contains("remaining connection slots")
        || said.contains("pool timed out")
        || said.contains("PoolTimedOut")
}

/// The failure message when Postgres had no connection for the test: what it said, and who holds
/// its connections (asked on a connection of its own, which may be refused too).
pub async fn no_free_connection(said: &str) -> String {
    let advice = format!(
        "Postgres is shared by everything on this machine; this suite is sized to hold at most {} connections at once \
         ({} tests with a database, TESSERA_TEST_DATABASES, each up to two instances of {POOL_SIZE} pooled \
         connections and two listeners, plus its own two). Stop the other clients, or lower TESSERA_TEST_DATABASES",
        connection_budget(),
        max_tests_with_a_database(),
    );
    let counted = match PgConnection::connect(&format!("{}/postgres", server_url())).await {
        Ok(mut c) => sqlx::query_as::<_, (i64, i64, i32, i32)>(
            "SELECT count(*), \
                    count(*) FILTER (WHERE datname LIKE 'tessera\\_test\\_%' OR datname LIKE 'tessera\\_tpl\\_%'), \
                    current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int \
             FROM pg_stat_activity WHERE backend_type = 'client backend'",
        )
        .fetch_one(&mut c)
        .await
        .map_err(|e| e.to_string()),
        Err(e) if is_full(&e.to_string()) => Err(format!("even a connection to ask who holds them was refused: {e}")),
        Err(e) => {
            return format!(
                "Postgres gave the test no connection ({said}), and a connection to ask why failed too: {e}"
            )
        }
    };
    match counted {
        // This connection got in and there is room again: the pool gave up while it was full.
        Ok((open, ours, max, reserved)) if open + i64::from(reserved) + 1 < i64::from(max) => format!(
            "Postgres refused a connection: all max_connections were in use a moment ago ({open} of {max} open \
             now: {ours} by test databases, {} by other clients). {advice}. Postgres or the pool said: {said}",
            open - ours
        ),
        Ok((open, ours, max, _)) => format!(
            "Postgres refused a connection: all max_connections are in use ({open} of {max} open: {ours} by test \
             databases, {} by other clients). {advice}. Postgres or the pool said: {said}",
            open - ours
        ),
        Err(why) => format!(
            "Postgres refused a connection: all max_connections are in use ({why}). {advice}. \
             Postgres or the pool said: {said}"
        ),
    }
}

fn migrations_fingerprint() -> String {
    let mut names: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut all = Vec::new();
    for p in names {
        all.extend(std::fs::read(p).unwrap());
    }
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, &all).as_ref()[..6])
}

/// Creates the template database once (per fingerprint), under an advisory lock so parallel test
/// processes do not race.
pub(super) async fn template() -> String {
    static NAME: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(|| async {
        let name = format!("tessera_tpl_{}", migrations_fingerprint());
        let mut admin = connect(&format!("{}/postgres", server_url())).await;
        sqlx::query("SELECT pg_advisory_lock(77001)").execute(&mut admin).await.unwrap();
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if !exists {
            let building = format!("{name}_building");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).execute(&mut admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {building}")).execute(&mut admin).await.unwrap();
            let mut conn = connect(&format!("{}/{building}", server_url())).await;
            tessera::db::MIGRATOR.run(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}")).execute(&mut admin).await.unwrap();
        }
        sqlx::query("SELECT pg_advisory_unlock(77001)").execute(&mut admin).await.unwrap();
        name
    })
    .await
    .clone()
}

/// Connections of one instance's pool (`TESSERA_DB_MAX_CONNECTIONS`; the service's default is 20).
pub const POOL_SIZE: u32 = 8;

/// How many tests may hold a database (with its instances) at once: `TESSERA_TEST_DATABASES`, by
/// default 2 (the test threads of a two-core machine; measured, two at once peaked at 32 connections
/// of the suite's). A test holds one slot however many instances it starts (peers share it); the
/// others wait in [`super::TestAppBuilder::spawn`] until a test ends.
pub fn max_tests_with_a_database() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("TESSERA_TEST_DATABASES").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(2)
    })
}

/// The most connections the suite holds at once: per test, two instances' pools and the two
/// listeners each keeps outside its pool, plus the test's own two (admin and `db()`), plus the
/// template's one.
pub(super) fn connection_budget() -> usize {
    max_tests_with_a_database() * (2 * (POOL_SIZE as usize + 2) + 2) + 1
}

/// This test's slot (see [`max_tests_with_a_database`]): taken by the first instance a test
/// starts, shared by the others it starts on the same thread, freed when the last is dropped.
pub(super) async fn database_slot() -> Arc<tokio::sync::OwnedSemaphorePermit> {
    static SLOTS: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    thread_local! {
        static HELD: std::cell::RefCell<std::sync::Weak<tokio::sync::OwnedSemaphorePermit>> = Default::default();
    }
    if let Some(held) = HELD.with(|h| h.borrow().upgrade()) {
        return held;
    }
    let slots = SLOTS.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(max_tests_with_a_database())));
    let permit = Arc::new(Arc::clone(slots).acquire_owned().await.expect("the semaphore is never closed"));
    HELD.with(|h| *h.borrow_mut() = Arc::downgrade(&permit));
    permit
}

/// A fresh database cloned from the template.
pub async fn fresh_database() -> String {
    let tpl = template().await;
    let name = format!("tessera_test_{}", Uuid::new_v4().simple());
    let mut admin = connect(&format!("{}/postgres", server_url())).await;
    // CREATE DATABASE … TEMPLATE conflicts when another clone is being made at the same instant.
    for attempt in 0..50 {
        match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {tpl}")).execute(&mut admin).await {
            Ok(_) => break,
            Err(e) if attempt < 49 && e.to_string().contains("being accessed by other users") => {
                // A retry after a refusal rather than a wait for something to observe: the clash is
                // only known by trying again.
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    name
}

pub(super) fn drop_database(name: String) {
    let url = format!("{}/postgres", server_url());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Ok(mut c) = PgConnection::connect(&url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
            }
        });
    })
    .join();
}

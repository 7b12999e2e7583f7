//! What another instance's work waits on after Postgres went away or an instance died: the `LISTEN`
//! wake-up of the relay and the webhook dispatcher comes back with Postgres (it used to fall back
//! to polling for good), and a dead instance's session stops holding its locks within seconds even
//! while one of its statements waits on a lock.

use std::time::Duration;

use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD, Engine};
use sqlx::{postgres::PgPoolOptions, PgConnection};
use tessera::{
    db::listen::{Wake, Wakeups},
    Config,
};

use crate::{helpers, tcp_proxy::Proxy};

async fn notify(conn: &mut PgConnection, channel: &str) {
    sqlx::query("SELECT pg_notify($1, 'x')").bind(channel).execute(conn).await.unwrap();
}

#[tokio::test]
async fn a_listener_lost_while_postgres_is_away_listens_again_once_it_is_back() {
    let server = helpers::server_url();
    let upstream = server.rsplit('@').next().unwrap().to_owned();
    let mut proxy = Proxy::bind().await;
    proxy.start(&upstream);
    let via_proxy =
        format!("{}@{}/postgres", server.rsplit_once('@').unwrap().0, proxy.url("x").trim_start_matches("x://"));
    // A refused connection fails an acquire after 1 s, not the default 30 s.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&via_proxy)
        .await
        .unwrap();
    // A channel of this test alone: the server is shared.
    let channel: &'static str = format!("tessera_test_wake_{}", uuid::Uuid::new_v4().simple()).leak();
    let channels: &'static [&'static str] = vec![channel].leak();
    let mut wakeups = Wakeups::new(pool, channels).await;
    assert!(wakeups.is_listening());
    let mut direct = helpers::admin_connection().await;

    notify(&mut direct, channel).await;
    assert!(matches!(wakeups.wait(Duration::from_secs(10)).await, Wake::Notified(_)));

    // Postgres goes away: the loss is reported, and nothing can be made again while it lasts.
    proxy.cut().await;
    assert!(matches!(wakeups.wait(Duration::from_secs(10)).await, Wake::Lost));
    assert!(!wakeups.is_listening());
    assert!(matches!(wakeups.wait(Duration::from_millis(50)).await, Wake::Poll));
    assert!(!wakeups.is_listening());

    // It is back: within a few polls the listener is made again, and notifications wake it.
    proxy.restore().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !wakeups.is_listening() {
        assert!(tokio::time::Instant::now() < deadline, "the listener was not made again within 20 s");
        wakeups.wait(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        notify(&mut direct, channel).await;
        if matches!(wakeups.wait(Duration::from_millis(500)).await, Wake::Notified(_)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no notification woke it within 10 s of the outage");
    }
}

/// `postgres://user@127.0.0.1:<proxy port>/postgres` for a proxy in front of the test server.
fn through(proxy: &Proxy) -> String {
    let server = helpers::server_url();
    format!("{}@{}/postgres", server.rsplit_once('@').unwrap().0, proxy.url("x").trim_start_matches("x://"))
}

async fn holds(conn: &mut PgConnection, key: i64) -> bool {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn a_dead_instances_session_waiting_on_a_lock_lets_go_of_its_locks_within_seconds() {
    let server = helpers::server_url();
    let mut proxy = Proxy::bind().await;
    proxy.start(server.rsplit('@').next().unwrap());
    let env = HashMap::from([
        ("TESSERA_DATABASE_URL".to_owned(), through(&proxy)),
        ("TESSERA_MASTER_KEY".to_owned(), STANDARD.encode([7u8; 32])),
        ("TESSERA_DB_MAX_CONNECTIONS".to_owned(), "2".to_owned()),
        // The statement timeout would end the wait too (5 s by default): keep it out of the way.
        ("TESSERA_DB_STATEMENT_TIMEOUT_MS".to_owned(), "60000".to_owned()),
    ]);
    let pool = tessera::db::connect(&Config::from_map(&env).unwrap()).await.unwrap();
    // Two advisory locks of this test alone (the server is shared): `held` is the relay's lock of
    // the story, `wanted` what its statement waits for, held by someone else.
    let held = i64::from(rand::random::<u32>()) << 8 | 1;
    let wanted = held + 1;
    let mut other = helpers::admin_connection().await;
    assert!(holds(&mut other, wanted).await);

    let waiter = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(held).execute(&mut *tx).await.unwrap();
        // Waits until `other` lets go, or the session ends.
        let _ = sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(wanted).execute(&mut *tx).await;
    });
    let mut watcher = helpers::admin_connection().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND ((classid::bigint << 32) | objid::bigint) = $1",
        )
        .bind(wanted)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the statement never waited on the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The instance dies: its connection closes while the statement still waits.
    proxy.cut().await;
    waiter.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while !holds(&mut watcher, held).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead session still held its lock 4 s later, waiting on one that is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

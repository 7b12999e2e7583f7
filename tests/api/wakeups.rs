//! The `LISTEN` wake-up of the relay and the webhook dispatcher: a listener lost while Postgres is
//! away listens again once it is back (it used to fall back to polling for good).

use std::time::Duration;

use sqlx::{postgres::PgPoolOptions, PgConnection};
use tessera::db::listen::{Wake, Wakeups};

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

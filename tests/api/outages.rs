//! What an outage may not leave behind once it is over (found under load by scripts/chaos).

use std::time::Duration;

use reqwest::StatusCode;
use sqlx::Connection;

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

async fn attempts(app: &TestApp, username: &str) -> Option<i32> {
    sqlx::query_scalar("SELECT attempts FROM login_attempts WHERE username_key = lower($1)")
        .bind(username)
        .fetch_optional(&mut app.db().await)
        .await
        .unwrap()
}

/// Sign-ins with the right password that reserve an attempt and then cannot finish (Postgres stalls
/// reading the user; the request timeout answers 503 and drops the handler) reached no verdict:
/// they must not count as failures. Before the fix, three such sign-ins during a Postgres restart
/// locked the account of a user who never typed a wrong password.
#[tokio::test]
async fn sign_ins_cut_short_by_an_outage_do_not_lock_the_account() {
    let app =
        TestAppBuilder::new().set("TESSERA_LOGIN_MAX_FAILURES", "3").set("TESSERA_REQUEST_TIMEOUT", "1").spawn().await;
    let login = setup_login(&app, &["a"], &["a"]).await;
    let ok = password_grant(&app, &login, &login.password, None).await;
    assert_eq!(ok.status(), StatusCode::OK);

    // A stalled Postgres, for the users table only: the attempt is reserved, then the read of the
    // user waits until the request timeout cuts the request short.
    let mut stall = app.db().await;
    let mut tx = stall.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    for n in 0..4 {
        let res = password_grant(&app, &login, &login.password, None).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "sign-in {n} during the stall");
    }
    tx.rollback().await.unwrap();

    // Given back once Postgres answers again, in the background: nothing counts against the user.
    eventually(Duration::from_secs(20), "the unfinished attempts given back", || async {
        attempts(&app, &login.username).await.unwrap_or(0) == 0
    })
    .await;
    let res = password_grant(&app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
}

/// The same, one step earlier: the reservation itself stalls (its row is locked), the request
/// timeout cuts the sign-in short while the upsert waits, and the upsert commits afterwards. Those
/// attempts reached no verdict either. Before the fix their numbers stayed counted: three of them
/// locked the account of a user who never typed a wrong password.
#[tokio::test]
async fn sign_ins_cut_short_while_reserving_do_not_lock_the_account() {
    let app =
        TestAppBuilder::new().set("TESSERA_LOGIN_MAX_FAILURES", "3").set("TESSERA_REQUEST_TIMEOUT", "1").spawn().await;
    let login = setup_login(&app, &["a"], &["a"]).await;
    let ok = password_grant(&app, &login, &login.password, None).await;
    assert_eq!(ok.status(), StatusCode::OK);

    let mut stall = app.db().await;
    let mut tx = stall.begin().await.unwrap();
    sqlx::query("LOCK TABLE login_attempts IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    for n in 0..3 {
        let res = password_grant(&app, &login, &login.password, None).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "sign-in {n} during the stall");
    }
    tx.rollback().await.unwrap();

    // The three upserts commit once the lock is gone, and their numbers come back.
    eventually(Duration::from_secs(20), "the unfinished reservations given back", || async {
        attempts(&app, &login.username).await.unwrap_or(0) == 0
    })
    .await;
    let res = password_grant(&app, &login, &login.password, None).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
}

//! How a stream stays open and how it ends: heartbeats, an expired cursor, its token's end.

use std::time::{Duration, Instant};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_idle_stream_sends_a_comment_every_heartbeat_interval() {
    let app = TestAppBuilder::new().set("TESSERA_REVOCATION_STREAM_HEARTBEAT", "1").spawn().await;
    let token = Revoker::new(&app).await.token(&app).await;
    let mut stream = subscribe(&app, &token, None, None).await;
    let started = Instant::now();
    for _ in 0..2 {
        let frame = stream.next(Duration::from_secs(3)).await.expect("open");
        assert!(frame.is_comment(), "{frame:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_cursor_older_than_what_is_kept_gets_reset_and_the_stream_closes() {
    let app = spawn_app().await;
    let r = Revoker::new(&app).await;
    let token = r.token(&app).await;
    for _ in 0..3 {
        r.one_event(&app).await;
    }
    eventually(WAIT, "three events sequenced", || async { all_seqs(&app, &token).await.len() == 3 }).await;
    let log = all_seqs(&app, &token).await;
    // What retention will do one day: the oldest events are gone.
    let mut db = app.db().await;
    sqlx::query("DELETE FROM revocation_events WHERE seq < $1").bind(log[2]).execute(&mut db).await.unwrap();

    let mut stream = subscribe(&app, &token, Some(&log[0].to_string()), None).await;
    let frame = stream.next(WAIT).await.expect("a reset");
    assert_eq!(frame.field("event"), Some("reset"));
    let data: Value = serde_json::from_str(frame.field("data").unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"oldest_seq": log[2]}));
    assert!(stream.next(WAIT).await.is_none(), "the stream closes after a reset");

    let res = app.get_auth(&format!("/v1/revocations?after={}", log[0]), &token).await;
    let body = assert_problem(res, 410, "CURSOR_EXPIRED").await;
    assert_eq!(body["oldest_seq"], log[2]);
    // Right before the oldest kept is still a valid cursor, on both surfaces.
    let mut stream = subscribe(&app, &token, Some(&log[1].to_string()), None).await;
    assert_eq!(stream.next_event(WAIT).await.0, log[2]);
    assert_eq!(app.get_auth(&format!("/v1/revocations?after={}", log[1]), &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_stream_closes_within_a_second_or_two_when_its_token_is_revoked() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let r = Revoker::new(&a).await;
    let token = r.token(&a).await;
    let mut stream = subscribe(&b, &token, None, None).await;
    r.revoke(&a, &token).await;
    let revoked = Instant::now();
    // The event that revoked it may be the last thing it hears.
    stream.closed(WAIT).await;
    assert!(revoked.elapsed() < Duration::from_secs(3), "closed after {:?}", revoked.elapsed());
}

#[tokio::test]
async fn the_stream_closes_when_its_token_expires() {
    let app = spawn_app().await;
    let token = Revoker::new(&app).await.token(&app).await;
    let mut stream = subscribe(&app, &token, None, None).await;
    app.clock.advance(Duration::from_secs(3600));
    stream.closed(Duration::from_secs(3)).await;
}

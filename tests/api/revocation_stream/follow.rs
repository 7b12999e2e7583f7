//! What the stream sends, in what order, and where a reconnection resumes.

use std::time::Duration;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_stream_starts_with_retry_and_sends_only_events_committed_after_it_opened_in_order() {
    let app = spawn_app().await;
    let r = Revoker::new(&app).await;
    let reader_token = r.token(&app).await;
    // An event from before the subscription, already in the log.
    r.one_event(&app).await;
    eventually(WAIT, "the first event is sequenced", || async { all_seqs(&app, &reader_token).await.len() == 1 }).await;

    let mut stream = subscribe(&app, &reader_token, None, None).await;
    let mut jtis = Vec::new();
    for _ in 0..3 {
        jtis.push(r.one_event(&app).await);
    }
    let mut seen = Vec::new();
    for jti in &jtis {
        let (seq, ev) = stream.next_event(WAIT).await;
        assert_eq!(ev["kind"], "access_token");
        assert_eq!(ev["jti"], jti.as_str(), "in commit order");
        seen.push(seq);
    }
    let log = all_seqs(&app, &reader_token).await;
    assert_eq!(seen, log[1..].to_vec(), "every new event, strictly increasing, none from before");
}

#[tokio::test]
async fn a_reconnection_resumes_after_last_event_id_with_nothing_skipped_or_repeated_across_instances() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let r = Revoker::new(&a).await;
    let reader_token = r.token(&a).await;

    // Events are made on A; the stream is read from B.
    let mut stream = subscribe(&b, &reader_token, None, None).await;
    for _ in 0..3 {
        r.one_event(&a).await;
    }
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(stream.next_event(WAIT).await.0);
    }
    drop(stream);
    for _ in 0..2 {
        r.one_event(&a).await;
    }
    // Last-Event-ID wins over a stale `after`.
    let last = seen.last().unwrap().to_string();
    let mut stream = subscribe(&b, &reader_token, Some(&last), Some(0)).await;
    for _ in 0..3 {
        seen.push(stream.next_event(WAIT).await.0);
    }
    let log = all_seqs(&a, &reader_token).await;
    assert_eq!(seen, log, "every event exactly once, in order");

    // `after` alone resumes as well, here from the middle of the log.
    let mut stream = subscribe(&a, &reader_token, None, Some(log[2])).await;
    assert_eq!(stream.next_event(WAIT).await.0, log[3]);
    assert_eq!(stream.next_event(WAIT).await.0, log[4]);
}

#[tokio::test]
async fn the_stream_needs_the_scope_and_a_well_formed_cursor() {
    let app = spawn_app().await;
    let r = Revoker::new(&app).await;
    let token = r.token(&app).await;
    let res = app.http.get(app.url("/v1/revocations/stream")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let other = app.token_with_scopes(&["keys:read"]).await;
    assert_problem(open(&app, &other, None, None).await, 403, "INSUFFICIENT_SCOPE").await;
    let body = assert_problem(open(&app, &token, Some("seven"), None).await, 400, "INVALID_REQUEST").await;
    assert!(body["detail"].as_str().unwrap().contains("Last-Event-ID"), "{body}");
    let body = assert_problem(open(&app, &token, None, Some(-1)).await, 400, "INVALID_REQUEST").await;
    assert!(body["detail"].as_str().unwrap().contains("after"), "{body}");
}

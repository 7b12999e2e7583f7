//! The verifier cut off from Tessera: it resumes the stream without losing an event, and fails
//! closed (or open, if so built) once it has been cut off longer than its bound.

use super::*;

#[tokio::test]
async fn the_stream_cut_and_resumed_loses_no_event() {
    let mut s = Setup::new().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let t = s.token(&["hello:read"]).await;
        assert_eq!(s.status(&t.0).await, 200);
        tokens.push(t);
    }
    s.proxy.cut().await;
    for (token, id, secret) in &tokens {
        s.revoke_token(token, id, secret).await;
    }
    eventually(Duration::from_secs(5), "Tessera sequences the three events", || async {
        let mut db = s.app.db().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM revocation_events WHERE kind = 'access_token' AND seq IS NOT NULL",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        n == 3
    })
    .await;
    s.proxy.restore().await;
    eventually(Duration::from_secs(10), "the verifier resumes and applies every event", || async {
        let seq = s.tessera_seq().await;
        let applied = s.verifier.status().applied_seq;
        (applied == seq).then_some(()).ok_or((applied, seq))
    })
    .await;
    for (token, _, _) in &tokens {
        assert_refused(s.hello(token).await, 401, Some("invalid_token")).await;
    }
    // And it follows live again.
    let (token, id, secret) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    s.revoke_token(&token, &id, &secret).await;
    eventually(WITHIN, "a revocation after the resume", || async { s.status(&token).await == 401 }).await;
}

#[tokio::test]
async fn cut_off_longer_than_its_bound_the_verifier_fails_closed_and_recovers() {
    let mut s = Setup::with(|b| b.max_staleness(Duration::from_secs(1))).await;
    let (token, _, _) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    s.proxy.cut().await;
    eventually(Duration::from_secs(5), "refusing once stale", || async { s.status(&token).await == 503 }).await;
    assert!(s.verifier.status().failing_closed);
    s.proxy.restore().await;
    eventually(Duration::from_secs(10), "accepting once current again", || async { s.status(&token).await == 200 })
        .await;
}

#[tokio::test]
async fn a_fail_open_verifier_keeps_accepting_valid_tokens_while_cut_off() {
    let mut s = Setup::with(|b| b.max_staleness(Duration::from_secs(1)).fail_open(true)).await;
    let (token, _, _) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    s.proxy.cut().await;
    eventually(Duration::from_secs(5), "stale", || async {
        s.verifier.status().stream_down_for > Duration::from_millis(1500)
    })
    .await;
    assert_eq!(s.status(&token).await, 200);
}

#[tokio::test]
async fn the_verifier_keeps_hearing_revocations_past_its_own_tokens_lifetime() {
    // Every token lives 3 s: the verifier must renew its own and reconnect before Tessera closes
    // the stream at its expiry, and resume where it was.
    let s =
        Setup::with_tessera(&[("TESSERA_ACCESS_TOKEN_TTL", "3")], |b| b.max_staleness(Duration::from_secs(1))).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let (token, id, secret) = s.token(&["hello:read"]).await;
        assert_eq!(s.status(&token).await, 200, "not failing closed at {:?}", started.elapsed());
        s.revoke_token(&token, &id, &secret).await;
        eventually(WITHIN, "a revocation heard", || async { s.status(&token).await == 401 }).await;
    }
    let status = s.verifier.status();
    assert!(!status.failing_closed);
    assert_eq!(status.stream_token_refusals, 0, "renewed before Tessera could refuse it");
}

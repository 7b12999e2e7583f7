//! Rate limits and credits of API keys across instances: exact under concurrency on two instances,
//! never more than the limit in any window (no boundary to straddle), credits exact through a Redis
//! outage and restart, refills, a key and its rotation successor sharing both, and per-instance
//! limits that `/readyz` and the metrics report while Redis is away.
//!
//! The limiter orders admissions by Redis's own clock (TIME inside its script), so the instances'
//! clocks need not agree; these tests therefore run in real time with short windows, and the test
//! clock (`app.clock`) matters only to credits' refills, which follow the service's clock.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    redis_proxy::{forget_keys, RedisProxy},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

async fn create(app: &TestApp, token: &str, limits: Value) -> Value {
    let mut body = json!({"name": "metered", "scopes": [], "environment": "live"});
    body.as_object_mut().unwrap().extend(limits.as_object().unwrap().clone());
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{body}");
    res.json().await.unwrap()
}

async fn verify(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys/verify", token, &body).await;
    assert_eq!(res.status(), StatusCode::OK, "never anything but 200 for a well-formed verification");
    res.json().await.unwrap()
}

fn outcome(v: &Value) -> &str {
    if v["valid"] == true {
        "VALID"
    } else {
        v["code"].as_str().unwrap()
    }
}

fn count(answers: &[Value], code: &str) -> usize {
    answers.iter().filter(|v| outcome(v) == code).count()
}

/// `n` verifications of `key` (each with `extra` fields) on each of `apps`, all at once.
async fn burst(apps: &[&TestApp], token: &str, key: &str, n: usize, extra: Value) -> Vec<Value> {
    let mut body = json!({"key": key});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let calls = apps.iter().flat_map(|app| (0..n).map(|_| verify(app, token, body.clone())).collect::<Vec<_>>());
    join_all(calls).await
}

async fn credits_of(app: &TestApp, token: &str, id: &str) -> Value {
    app.get_auth(&format!("/v1/keys/{id}"), token).await.json::<Value>().await.unwrap()["credits"].clone()
}

async fn readyz(app: &TestApp) -> Value {
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "Redis away never makes an instance unready");
    res.json().await.unwrap()
}

#[tokio::test]
async fn sixty_concurrent_verifications_on_two_instances_admit_exactly_the_limit_of_twenty() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = create(&app, &token, json!({"rate_limit": {"limit": 20, "window": 30}})).await;
    let secret = key["key"].as_str().unwrap();

    let answers = burst(&[&app, &peer], &token, secret, 30, json!({})).await;
    assert_eq!(count(&answers, "VALID"), 20, "{answers:?}");
    assert_eq!(count(&answers, "RATE_LIMITED"), 40);
    // Each admission saw its own count: remaining runs 19 down to 0, once each.
    let mut remaining: Vec<i64> = answers
        .iter()
        .filter(|v| v["valid"] == true)
        .map(|v| {
            assert_eq!(v["rate_limit"]["limit"], 20, "{v}");
            v["rate_limit"]["remaining"].as_i64().unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<i64>>());
    for v in answers.iter().filter(|v| v["valid"] == false) {
        assert_eq!(v["rate_limit"]["limit"], 20, "{v}");
        assert_eq!(v["rate_limit"]["remaining"], 0, "{v}");
        let retry = v["retry_after"].as_i64().unwrap();
        assert!((1..=30).contains(&retry), "{v}");
        let reset = time::OffsetDateTime::parse(
            v["rate_limit"]["reset"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let ahead = reset - time::OffsetDateTime::now_utc();
        assert!(ahead > time::Duration::ZERO && ahead <= time::Duration::seconds(31), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 4, "valid, code, rate_limit, retry_after: {v}");
    }
    // Still limited on both, whichever is asked.
    for a in [&app, &peer] {
        assert_eq!(outcome(&verify(a, &token, json!({"key": secret})).await), "RATE_LIMITED");
    }
}

/// A fixed-window counter admits up to twice its limit around each boundary; a sliding window
/// admits at most the limit in every interval of its length, wherever it starts.
#[tokio::test]
async fn bursts_on_both_sides_of_any_window_boundary_never_admit_more_than_the_limit() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    const LIMIT: usize = 5;
    const WINDOW: Duration = Duration::from_secs(3);
    let key = create(&app, &token, json!({"rate_limit": {"limit": LIMIT, "window": WINDOW.as_secs()}})).await;
    let secret = key["key"].as_str().unwrap();

    // A burst admits the limit; one just before the window of its admissions ends admits nothing;
    // one just after admits the limit again.
    let a_start = Instant::now();
    let first = burst(&[&app, &peer], &token, secret, LIMIT, json!({})).await;
    let a_end = Instant::now();
    assert_eq!(count(&first, "VALID"), LIMIT);
    assert!(a_end - a_start < Duration::from_millis(1500), "the burst took {:?}", a_end - a_start);
    tokio::time::sleep_until((a_start + WINDOW - Duration::from_millis(700)).into()).await;
    let before = burst(&[&app, &peer], &token, secret, LIMIT, json!({})).await;
    assert!(Instant::now() < a_start + WINDOW, "the second burst ran late; the test proves nothing");
    assert_eq!(count(&before, "VALID"), 0, "{before:?}");
    tokio::time::sleep_until((a_end + WINDOW + Duration::from_millis(300)).into()).await;
    let after = burst(&[&app, &peer], &token, secret, LIMIT, json!({})).await;
    assert_eq!(count(&after, "VALID"), LIMIT);

    // Then steady pressure from both instances for a few windows: wherever a window of WINDOW
    // starts, the admissions inside it (each known to lie between its request's start and end)
    // never number more than the limit.
    tokio::time::sleep(WINDOW).await;
    let until = Instant::now() + WINDOW * 2 + WINDOW / 2;
    let runs = join_all([
        pressure(&app, &token, secret, until),
        pressure(&peer, &token, secret, until),
        pressure(&app, &token, secret, until),
        pressure(&peer, &token, secret, until),
    ])
    .await;
    let admitted: Vec<(Instant, Instant)> =
        runs.into_iter().flatten().filter(|(_, _, ok)| *ok).map(|(s, e, _)| (s, e)).collect();
    assert!(admitted.len() >= 2 * LIMIT, "only {} admitted in {:?}", admitted.len(), WINDOW * 2);
    for (start, _) in &admitted {
        let inside = admitted.iter().filter(|(s, e)| s >= start && *e < *start + WINDOW).count();
        assert!(inside <= LIMIT, "{inside} admissions within {WINDOW:?} of one another");
    }
}

/// Verifies `secret` on `app` every few milliseconds until `until`: (start, end, admitted) of each.
async fn pressure(app: &TestApp, token: &str, secret: &str, until: Instant) -> Vec<(Instant, Instant, bool)> {
    let mut seen = Vec::new();
    while Instant::now() < until {
        let start = Instant::now();
        let v = verify(app, token, json!({"key": secret})).await;
        seen.push((start, Instant::now(), v["valid"] == true));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    seen
}

#[tokio::test]
async fn thirty_verifications_of_cost_three_against_fifty_credits_admit_sixteen_and_leave_two() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = create(&app, &token, json!({"credits": 50})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());

    let answers = burst(&[&app, &peer], &token, secret, 15, json!({"cost": 3})).await;
    assert_eq!(count(&answers, "VALID"), 16, "{answers:?}");
    assert_eq!(count(&answers, "USAGE_EXCEEDED"), 14);
    let mut left: Vec<i64> =
        answers.iter().filter(|v| v["valid"] == true).map(|v| v["credits_remaining"].as_i64().unwrap()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..16).map(|i| 2 + 3 * i).collect::<Vec<i64>>(), "each spend saw the one before it");
    assert_eq!(credits_of(&app, &token, id).await, 2);
    assert_eq!(credits_of(&peer, &token, id).await, 2);
    // What is left still pays for what it covers; cost 0 always passes.
    assert_eq!(outcome(&verify(&peer, &token, json!({"key": secret, "cost": 3})).await), "USAGE_EXCEEDED");
    let v = verify(&app, &token, json!({"key": secret, "cost": 2})).await;
    assert_eq!((outcome(&v), &v["credits_remaining"]), ("VALID", &json!(0)));
    let v = verify(&app, &token, json!({"key": secret, "cost": 0})).await;
    assert_eq!((outcome(&v), &v["credits_remaining"]), ("VALID", &json!(0)));
    assert_eq!(outcome(&verify(&app, &token, json!({"key": secret})).await), "USAGE_EXCEEDED");
    assert_eq!(credits_of(&app, &token, id).await, 0);
}

/// The shared Redis cannot be restarted from a test: both instances reach it through a proxy that
/// the test stops (Redis gone: every connection cut, new ones refused) and starts again after
/// deleting this test's keys (what a restarted Redis would have lost).
#[tokio::test]
async fn credits_stay_exact_through_a_redis_outage_and_restart_mid_run() {
    let mut proxy = RedisProxy::start().await;
    let app = TestAppBuilder::new().set("TESSERA_REDIS_URL", &proxy.url()).spawn().await;
    let peer = app.spawn_peer().await;
    let prefix = app.env["TESSERA_REDIS_PREFIX"].clone();
    let token = app.token_with_scopes(&ALL).await;
    let key = create(&app, &token, json!({"credits": 50, "rate_limit": {"limit": 1000, "window": 60}})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let cost = json!({"cost": 3});

    let mut answers = burst(&[&app, &peer], &token, secret, 5, cost.clone()).await;
    assert_eq!(readyz(&app).await["rate_limits"], "shared");
    assert!(forget_keys(&prefix).await > 0, "the rate-limit window lives under the test's prefix");

    proxy.stop().await;
    answers.extend(burst(&[&app, &peer], &token, secret, 5, cost.clone()).await);
    let ready = readyz(&peer).await;
    assert_eq!((&ready["redis"], &ready["rate_limits"]), (&json!("down"), &json!("per_instance")), "{ready}");

    forget_keys(&prefix).await;
    proxy.resume().await;
    for a in [&app, &peer] {
        eventually(Duration::from_secs(5), "rate limits shared again", || async {
            readyz(a).await["rate_limits"] == "shared"
        })
        .await;
    }
    answers.extend(burst(&[&app, &peer], &token, secret, 5, cost).await);
    assert_eq!(count(&answers, "VALID"), 16, "{answers:?}");
    assert_eq!(count(&answers, "USAGE_EXCEEDED"), 14);
    assert_eq!(credits_of(&app, &token, id).await, 2);

    // And after both instances restart too.
    let db = app.db_name.clone();
    peer.stop().await;
    let mut again = TestAppBuilder::new().set("TESSERA_REDIS_URL", &proxy.url());
    again.db_name = Some(db);
    let again = again.spawn().await;
    assert_eq!(credits_of(&again, &token, id).await, 2);
    assert_eq!(outcome(&verify(&again, &token, json!({"key": secret, "cost": 3})).await), "USAGE_EXCEEDED");
}

#[tokio::test]
async fn a_refill_sets_the_balance_back_each_interval_from_when_it_was_set() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = create(&app, &token, json!({"credits": 2, "refill": {"amount": 5, "interval": 60}})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let one = json!({"key": secret});
    assert_eq!(outcome(&verify(&app, &token, one.clone()).await), "VALID");
    assert_eq!(outcome(&verify(&app, &token, one.clone()).await), "VALID");
    assert_eq!(outcome(&verify(&app, &token, one.clone()).await), "USAGE_EXCEEDED");
    app.clock.advance(Duration::from_secs(61));
    assert_eq!(credits_of(&app, &token, id).await, 5, "GET shows the refilled balance before any spend");
    let v = verify(&app, &token, one.clone()).await;
    assert_eq!((outcome(&v), &v["credits_remaining"]), ("VALID", &json!(4)));
    // Set back to the amount, not added to it, however many intervals passed.
    app.clock.advance(Duration::from_secs(180));
    let v = verify(&app, &token, one.clone()).await;
    assert_eq!((outcome(&v), &v["credits_remaining"]), ("VALID", &json!(4)));
    // Setting credits sets the balance; the schedule goes on from when the refill was set.
    let res = app.http.patch(app.url(&format!("/v1/keys/{id}"))).bearer_auth(&token).json(&json!({"credits": 0}));
    assert_eq!(res.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(outcome(&verify(&app, &token, one.clone()).await), "USAGE_EXCEEDED");
    app.clock.advance(Duration::from_secs(60));
    assert_eq!(outcome(&verify(&app, &token, one).await), "VALID");
    assert_eq!(credits_of(&app, &token, id).await, 4);
}

#[tokio::test]
async fn a_key_and_its_rotation_successor_share_their_limit_and_credits() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    let old = create(&app, &token, json!({"credits": 10, "rate_limit": {"limit": 4, "window": 30}})).await;
    let (old_id, old_key) = (old["id"].as_str().unwrap(), old["key"].as_str().unwrap());
    for _ in 0..2 {
        assert_eq!(outcome(&verify(&peer, &token, json!({"key": old_key})).await), "VALID");
    }
    let res = app.post_json(&format!("/v1/keys/{old_id}/rotate"), &token, &json!({"grace_period": 600})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let new: Value = res.json().await.unwrap();
    let (new_id, new_key) = (new["id"].as_str().unwrap(), new["key"].as_str().unwrap());
    // The successor carries the limits over, with the balance as the old key left it.
    assert_eq!((&new["rate_limit"], &new["credits"]), (&json!({"limit": 4, "window": 30}), &json!(8)));
    let v = verify(&app, &token, json!({"key": new_key})).await;
    assert_eq!((&v["rate_limit"]["remaining"], &v["credits_remaining"]), (&json!(1), &json!(7)), "{v}");
    let v = verify(&peer, &token, json!({"key": old_key})).await;
    assert_eq!((outcome(&v), &v["rate_limit"]["remaining"]), ("VALID", &json!(0)), "{v}");
    for (a, k) in [(&app, old_key), (&peer, new_key), (&app, new_key)] {
        assert_eq!(outcome(&verify(a, &token, json!({"key": k})).await), "RATE_LIMITED");
    }
    assert_eq!(credits_of(&app, &token, old_id).await, 6);
    assert_eq!(credits_of(&peer, &token, new_id).await, 6);
    // A change made through either key is the group's.
    let res = app.http.patch(app.url(&format!("/v1/keys/{new_id}"))).bearer_auth(&token);
    let res = res.json(&json!({"credits": 100, "rate_limit": {"limit": 50, "window": 30}})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(credits_of(&peer, &token, old_id).await, 100);
    eventually(Duration::from_secs(1), "the old key's new limit on the peer", || async {
        let v = verify(&peer, &token, json!({"key": old_key})).await;
        v["valid"] == true && v["rate_limit"]["limit"] == 50
    })
    .await;
}

#[tokio::test]
async fn with_redis_away_each_instance_limits_exactly_on_its_own_and_says_so() {
    // Nothing listens on port 1: Redis is configured but never answers.
    let app = TestAppBuilder::new().set("TESSERA_REDIS_URL", "redis://127.0.0.1:1").spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = create(&app, &token, json!({"rate_limit": {"limit": 3, "window": 30}, "credits": 100})).await;
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    for a in [&app, &peer] {
        let answers = burst(&[a], &token, secret, 6, json!({})).await;
        assert_eq!(count(&answers, "VALID"), 3, "exact per instance: {answers:?}");
        assert_eq!(count(&answers, "RATE_LIMITED"), 3);
        let ready = readyz(a).await;
        assert_eq!((&ready["redis"], &ready["rate_limits"]), (&json!("down"), &json!("per_instance")), "{ready}");
        let metrics = a.http.get(a.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.lines().any(|l| l == "api_key_rate_limits_shared 0"), "{metrics}");
    }
    // Credits live in Postgres: exact across both instances whatever Redis does.
    assert_eq!(credits_of(&peer, &token, id).await, 94);
    let single = spawn_app().await;
    assert_eq!(readyz(&single).await["rate_limits"], "per_instance");
}

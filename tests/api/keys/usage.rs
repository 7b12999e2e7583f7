//! Usage counting: exact across instances, bucketed by minute or hour, off when disabled.

use std::time::Duration;

use serde_json::{json, Value};
use tessera::apikeys::{ApiKeySecret, Environment};

use crate::helpers::*;

use super::*;

/// A usage report flushes this instance's counts first, and its client may go away meanwhile. A
/// flush cancelled during its write used to drop the batch, and every count in it, with it.
#[tokio::test]
async fn a_flush_cancelled_during_its_write_loses_no_count() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let (key, id) = (key_of(&created).to_owned(), id_of(&created).to_owned());
    let mut counted = 0;
    loop {
        assert_eq!(code(&app, &token, json!({"key": key})).await, "VALID");
        counted += 1;
        let mut cancelled = Box::pin(app.parts.usage.flush(&app.parts.db));
        if futures::poll!(&mut cancelled).is_pending() {
            // Its write is under way: cancel it there.
            drop(cancelled);
            break;
        }
        // The periodic flusher took the batch first: count once more and try again.
        assert!(counted < 5, "the flush never got to write");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut db = app.db().await;
    loop {
        let valid: Option<i64> = sqlx::query_scalar("SELECT sum(valid)::bigint FROM key_usage WHERE key_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
        if valid == Some(counted) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{valid:?} of {counted} verifications written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn usage_adds_up_exactly_across_two_instances_and_a_graceful_stop() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let key = key_of(&created).to_owned();
    let id = id_of(&created).to_owned();

    for _ in 0..3 {
        assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    }
    assert_eq!(
        code(&app, &token, json!({"key": key, "ip": "203.0.113.1", "scopes": ["x"]})).await,
        "INSUFFICIENT_SCOPE"
    );
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": key, "ip": "203.0.113.2"})).await, "VALID");
    }
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": key, "scopes": ["x"]})).await, "INSUFFICIENT_SCOPE");
    }
    // Unknown and malformed keys count against their source.
    let unknown = ApiKeySecret::generate(Environment::Live);
    for _ in 0..2 {
        assert_eq!(code(&peer, &token, json!({"key": unknown.expose(), "ip": "198.51.100.9"})).await, "NOT_FOUND");
    }
    assert_eq!(code(&peer, &token, json!({"key": "tsk_live_nope", "ip": "198.51.100.9"})).await, "MALFORMED");
    // This instance's counts are written now; the peer's must be in Postgres once it has stopped
    // gracefully, whether or not its periodic flush ran in between.
    app.parts.usage.flush(&app.parts.db).await.unwrap();
    peer.stop().await;
    let mut db = app.db().await;
    let (valid, denied): (i64, Value) =
        sqlx::query_as("SELECT sum(valid)::bigint, jsonb_agg(denied) FROM key_usage WHERE key_id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(valid, 5, "{denied}");
    let refused: i64 = denied.as_array().unwrap().iter().map(|d| d["INSUFFICIENT_SCOPE"].as_i64().unwrap_or(0)).sum();
    assert_eq!(refused, 3);

    let usage: Value = app.get_auth(&format!("/v1/keys/{id}/usage"), &token).await.json().await.unwrap();
    assert_eq!(usage["totals"], json!({"valid": 5, "denied": {"INSUFFICIENT_SCOPE": 3}}), "{usage}");
    assert_eq!(usage["distinct_ips"], 3, "203.0.113.1, 203.0.113.2 and 127.0.0.1: {usage}");
    assert!(usage["last_used_at"].is_string());
    assert!(["203.0.113.1", "203.0.113.2", "127.0.0.1"].contains(&usage["last_used_ip"].as_str().unwrap()));
    let buckets = usage["buckets"].as_array().unwrap();
    assert!((1..=2).contains(&buckets.len()), "{usage}");
    let sum: i64 = buckets.iter().map(|b| b["valid"].as_i64().unwrap()).sum();
    assert_eq!(sum, 5);
    let hourly: Value = app.get_auth(&format!("/v1/keys/{id}/usage?bucket=hour"), &token).await.json().await.unwrap();
    assert_eq!(hourly["totals"], usage["totals"]);
    assert!(hourly["buckets"][0]["start"].as_str().unwrap().contains(":00:00"), "{hourly}");

    let (count, codes): (i64, Value) = sqlx::query_as(
        "SELECT sum(count)::bigint, jsonb_object_agg(source, codes) FROM source_failures WHERE source = '198.51.100.9'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(count, 3);
    assert_eq!(codes["198.51.100.9"], json!({"NOT_FOUND": 2, "MALFORMED": 1}));
    let (last_at, last_ip): (Option<time::OffsetDateTime>, Option<String>) =
        sqlx::query_as("SELECT last_used_at, last_used_ip FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(last_at.is_some() && last_ip.is_some());
}

#[tokio::test]
async fn usage_buckets_by_minute_or_hour_over_a_range_including_rolled_up_hours() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let id: uuid::Uuid = id_of(&created).parse().unwrap();
    let mut db = app.db().await;
    let hour = time::macros::datetime!(2030-01-01 10:00 UTC);
    for (bucket, start, valid, denied) in [
        ("hour", hour - time::Duration::HOUR, 100, json!({"EXPIRED": 4})),
        ("minute", hour + time::Duration::minutes(1), 5, json!({"EXPIRED": 1})),
        ("minute", hour + time::Duration::minutes(2), 7, json!({"IP_NOT_ALLOWED": 2})),
        ("minute", hour + time::Duration::minutes(61), 3, json!({})),
    ] {
        sqlx::query("INSERT INTO key_usage (key_id, bucket, start, valid, denied) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(bucket)
            .bind(start)
            .bind(valid as i64)
            .bind(denied)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let range = "from=2030-01-01T09:00:00Z&to=2030-01-01T11:30:00Z";
    let hourly: Value =
        app.get_auth(&format!("/v1/keys/{id}/usage?bucket=hour&{range}"), &token).await.json().await.unwrap();
    assert_eq!(
        hourly["buckets"],
        json!([
            {"start": "2030-01-01T09:00:00Z", "valid": 100, "denied": {"EXPIRED": 4}},
            {"start": "2030-01-01T10:00:00Z", "valid": 12, "denied": {"EXPIRED": 1, "IP_NOT_ALLOWED": 2}},
            {"start": "2030-01-01T11:00:00Z", "valid": 3, "denied": {}}
        ])
    );
    assert_eq!(hourly["totals"], json!({"valid": 115, "denied": {"EXPIRED": 5, "IP_NOT_ALLOWED": 2}}));
    let minutes: Value = app
        .get_auth(
            &format!("/v1/keys/{id}/usage?bucket=minute&from=2030-01-01T10:00:30Z&to=2030-01-01T10:02:00Z"),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        minutes["buckets"],
        json!([
            {"start": "2030-01-01T10:01:00Z", "valid": 5, "denied": {"EXPIRED": 1}},
            {"start": "2030-01-01T10:02:00Z", "valid": 7, "denied": {"IP_NOT_ALLOWED": 2}}
        ])
    );
    assert_eq!(minutes["totals"]["valid"], 12);
    assert_eq!(minutes["distinct_ips"], 0);
}

#[tokio::test]
async fn with_counting_off_verification_still_works_and_nothing_is_counted() {
    let app = TestAppBuilder::new().set("TESSERA_USAGE_COUNTING", "false").spawn().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    assert_eq!(code(&app, &token, json!({"key": key_of(&created)})).await, "VALID");
    assert_eq!(code(&app, &token, json!({"key": "tsk_live_nope"})).await, "MALFORMED");
    assert_eq!(app.parts.usage.pending_verifications(), 0);
    assert!(!app.parts.usage.has_pending());
}

#[tokio::test]
async fn distinct_ips_counts_only_addresses_seen_within_the_range() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), key_of(&created).to_owned());
    let rfc3339 = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    // 203.0.113.1 before and after the middle minute, 203.0.113.2 only within it.
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    app.clock.advance(Duration::from_secs(120));
    let middle = app.clock.now();
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.2"})).await, "VALID");
    app.clock.advance(Duration::from_secs(120));
    assert_eq!(code(&app, &token, json!({"key": key, "ip": "203.0.113.1"})).await, "VALID");
    app.parts.usage.flush(&app.parts.db).await.unwrap();

    let usage_between = |from: time::OffsetDateTime, to: time::OffsetDateTime| {
        let url = format!("/v1/keys/{id}/usage?bucket=minute&from={}&to={}", rfc3339(from), rfc3339(to));
        let (app, token) = (&app, &token);
        async move { app.get_auth(&url, token).await.json::<Value>().await.unwrap() }
    };
    let within = usage_between(middle - time::Duration::minutes(1), middle + time::Duration::minutes(1)).await;
    assert_eq!(within["totals"]["valid"], 1, "{within}");
    assert_eq!(within["distinct_ips"], 1, "only 203.0.113.2 was seen in the range: {within}");
    let all = usage_between(middle - time::Duration::minutes(10), middle + time::Duration::minutes(10)).await;
    assert_eq!(all["totals"]["valid"], 3, "{all}");
    assert_eq!(all["distinct_ips"], 2, "{all}");
}

/// The API's last use (usage report, key view and key list alike) is the latest verification, from the
/// usage rows; the key's own row is written by a first use and then at most hourly, so traffic
/// spread over many keys does not rewrite a wide row per key and minute.
#[tokio::test]
async fn last_use_is_exact_in_every_view_while_the_key_row_is_written_hourly() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let (key, id) = (key_of(&created).to_owned(), id_of(&created).to_owned());
    let mut db = app.db().await;
    let mut stored = async || -> (Option<time::OffsetDateTime>, Option<String>) {
        sqlx::query_as("SELECT last_used_at, last_used_ip FROM api_keys WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let use_from = async |ip: &str| -> (Value, Value) {
        assert_eq!(code(&app, &token, json!({"key": key, "ip": ip})).await, "VALID");
        app.parts.usage.flush(&app.parts.db).await.unwrap();
        let usage: Value = app.get_auth(&format!("/v1/keys/{id}/usage"), &token).await.json().await.unwrap();
        let view: Value = app.get_auth(&format!("/v1/keys/{id}"), &token).await.json().await.unwrap();
        let list: Value = app.get_auth("/v1/keys", &token).await.json().await.unwrap();
        let listed = list.as_array().unwrap().iter().filter(|k| k["id"] == id.as_str()).collect::<Vec<_>>();
        assert_eq!(listed.len(), 1, "{list}");
        for shown in [&view, listed[0]] {
            assert_eq!(
                (&usage["last_used_at"], &usage["last_used_ip"]),
                (&shown["last_used_at"], &shown["last_used_ip"]),
                "{usage} {shown}"
            );
        }
        (usage["last_used_at"].clone(), usage["last_used_ip"].clone())
    };
    let first = use_from("203.0.113.1").await;
    assert_eq!(first.1, "203.0.113.1");
    let row = stored().await;
    assert_eq!(row.1.as_deref(), Some("203.0.113.1"), "a first use writes the key's row");
    let moved = use_from("203.0.113.2").await;
    assert_eq!(moved.1, "203.0.113.2");
    assert!(moved.0.as_str().unwrap() >= first.0.as_str().unwrap(), "{moved:?} after {first:?}");
    assert_eq!(stored().await, row, "within the hour the key's own row is left alone");
    let usage: Value = app.get_auth(&format!("/v1/keys/{id}/usage"), &token).await.json().await.unwrap();
    assert_eq!(usage["totals"]["valid"], 2, "{usage}");
    assert_eq!(usage["distinct_ips"], 2, "{usage}");
}

/// Every flush appends a row per key and minute; once a minute has closed, compaction merges the
/// rows of a key with four or more in it into one (fewer are left for readers to add up), and the
/// report (buckets, totals, addresses, last use) is unchanged.
#[tokio::test]
async fn closed_minutes_merge_into_one_row_per_busy_key_and_the_report_stays_the_same() {
    let app = spawn_app().await;
    let (token, _) = developer(&app).await;
    let created = simple_key(&app, &token).await;
    let (key, id) = (key_of(&created).to_owned(), id_of(&created).to_owned());
    let mut uses = vec![("203.0.113.1", json!(["x"]), "INSUFFICIENT_SCOPE"), ("203.0.113.2", json!([]), "VALID")];
    uses.extend(std::iter::repeat_n(("203.0.113.1", json!([]), "VALID"), 6));
    for (ip, scopes, expected) in uses {
        assert_eq!(code(&app, &token, json!({"key": key, "ip": ip, "scopes": scopes})).await, expected);
        app.parts.usage.flush(&app.parts.db).await.unwrap();
    }
    let mut db = app.db().await;
    let rows_per_minute = async |db: &mut sqlx::PgConnection| -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM key_usage WHERE key_id = $1::uuid AND bucket = 'minute' GROUP BY start ORDER BY start",
        )
        .bind(&id)
        .fetch_all(db)
        .await
        .unwrap()
    };
    let before_rows = rows_per_minute(&mut db).await;
    // Eight flushes in at most two minutes: some minute holds four rows or more.
    assert!(before_rows.iter().any(|n| *n >= 4), "{before_rows:?}");
    let report = async || -> Value {
        let path = format!("/v1/keys/{id}/usage?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z");
        app.get_auth(&path, &token).await.json().await.unwrap()
    };
    let before = report().await;
    assert_eq!(before["totals"], json!({"valid": 7, "denied": {"INSUFFICIENT_SCOPE": 1}}), "{before}");
    assert_eq!(before["distinct_ips"], 2, "{before}");

    // Not while the minute may still receive flushes.
    assert_eq!(app.parts.detector.compact().await.unwrap().unwrap_or(0), 0);
    assert_eq!(rows_per_minute(&mut db).await, before_rows);

    app.clock.advance(Duration::from_secs(180));
    eventually(Duration::from_secs(10), "a compaction of our own ran", || async {
        app.parts.detector.compact().await.unwrap().is_some()
    })
    .await;
    let after_rows = rows_per_minute(&mut db).await;
    assert_eq!(after_rows.len(), before_rows.len());
    let expected: Vec<i64> = before_rows.iter().map(|n| if *n >= 4 { 1 } else { *n }).collect();
    assert_eq!(after_rows, expected, "before: {before_rows:?}");
    assert_eq!(report().await, before);
}

//! The anomaly detector on scripted usage: each kind is raised by its scenario and not by a normal one.

use serde_json::{json, Value};
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::*;

/// One detection pass of our own (the app's background pass may hold the lock for a moment).
async fn detect(app: &TestApp) {
    eventually(std::time::Duration::from_secs(10), "a detection pass of our own ran", || async {
        app.parts.detector.run_once().await.unwrap().is_some()
    })
    .await;
}

async fn roll_up(app: &TestApp) {
    eventually(std::time::Duration::from_secs(10), "a roll-up of our own ran", || async {
        app.parts.detector.roll_up().await.unwrap().is_some()
    })
    .await;
}

fn minute(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

/// An API-key row created `age` ago (the detector joins on it).
async fn key_row(db: &mut PgConnection, now: OffsetDateTime, age: Duration) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO api_keys (id, owner, name, key_hash, hash_version, start, environment, scopes, created_at)
         VALUES ($1, 'owner', 'k', $2, 1, 'tsk_live_abc', 'live', '{}', $3)",
    )
    .bind(id)
    .bind(id.as_bytes().to_vec())
    .bind(now - age)
    .execute(db)
    .await
    .unwrap();
    id
}

async fn usage(db: &mut PgConnection, key: Uuid, start: OffsetDateTime, valid: i64, denied: Value) {
    sqlx::query("INSERT INTO key_usage (key_id, bucket, start, valid, denied) VALUES ($1, 'minute', $2, $3, $4)")
        .bind(key)
        .bind(start)
        .bind(valid)
        .bind(denied)
        .execute(db)
        .await
        .unwrap();
}

async fn anomalies_of(db: &mut PgConnection, kind: &str) -> Vec<(Option<Uuid>, Value)> {
    sqlx::query_as("SELECT key_id, details FROM anomalies WHERE kind = $1").bind(kind).fetch_all(db).await.unwrap()
}

/// A key used steadily at `rate` per minute for the past hour.
async fn steady_key(db: &mut PgConnection, now: OffsetDateTime, rate: i64) -> Uuid {
    let key = key_row(db, now, Duration::hours(2)).await;
    let last = minute(now) - Duration::MINUTE;
    for m in 1..=60 {
        usage(db, key, last - Duration::minutes(m), rate, json!({})).await;
    }
    key
}

#[tokio::test]
async fn a_rate_spike_is_raised_once_with_its_evidence_and_a_steady_key_raises_nothing() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    let last = minute(now) - Duration::MINUTE;
    let spiking = steady_key(&mut tx, now, 20).await;
    usage(&mut tx, spiking, last, 900, json!({})).await;
    let steady = steady_key(&mut tx, now, 200).await;
    usage(&mut tx, steady, last, 210, json!({"INSUFFICIENT_SCOPE": 5})).await;
    // A quiet key that doubles stays under the floor.
    let quiet = steady_key(&mut tx, now, 2).await;
    usage(&mut tx, quiet, last, 40, json!({})).await;
    // A brand-new key has no baseline yet.
    let fresh = key_row(&mut tx, now, Duration::minutes(2)).await;
    usage(&mut tx, fresh, last, 5000, json!({})).await;

    tx.commit().await.unwrap();
    detect(&app).await;
    detect(&app).await;
    let found = anomalies_of(&mut db, "RATE_SPIKE").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(spiking));
    assert_eq!(found[0].1["count"], 900);
    assert_eq!(found[0].1["baseline_per_minute"], 20.0);
}

/// The background pass looks for a spike in a minute once, and only once the minute has settled
/// (10 s after it ended, when every instance has flushed it).
#[tokio::test]
async fn the_background_pass_checks_a_minute_for_spikes_once_it_has_settled() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Second 2 of a minute: the minute before has not settled yet.
    let second = u64::from(app.clock.now().second());
    app.clock.advance(std::time::Duration::from_secs(60 - second + 2));
    let now = app.clock.now();
    let last = minute(now) - Duration::MINUTE;
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let spiking = steady_key(&mut tx, now, 20).await;
    usage(&mut tx, spiking, last, 900, json!({})).await;
    tx.commit().await.unwrap();

    // The minute this instance last checked, as the background loop keeps it.
    let done = tokio::sync::Mutex::new(None);
    let scheduled = async || {
        eventually(std::time::Duration::from_secs(10), "a background pass of our own ran", || async {
            app.parts.detector.run_scheduled(&mut *done.lock().await).await.unwrap().is_some()
        })
        .await;
    };
    scheduled().await;
    assert_eq!(*done.lock().await, None, "not checked before it settled");
    assert!(anomalies_of(&mut db, "RATE_SPIKE").await.is_empty());

    app.clock.advance(std::time::Duration::from_secs(13));
    scheduled().await;
    assert_eq!(*done.lock().await, Some(last));
    let found = anomalies_of(&mut db, "RATE_SPIKE").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(spiking));
}

#[tokio::test]
async fn revoked_and_expired_keys_in_use_are_raised_and_normal_refusals_are_not() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    let revoked = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, revoked, minute(now), 0, json!({"REVOKED": 3})).await;
    let expired = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, expired, minute(now) - Duration::MINUTE, 0, json!({"EXPIRED": 1})).await;
    let normal = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, normal, minute(now), 50, json!({"INSUFFICIENT_SCOPE": 2, "IP_NOT_ALLOWED": 1})).await;
    // Old evidence (an hour ago) does not count.
    let old = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, old, minute(now) - Duration::HOUR, 0, json!({"REVOKED": 9})).await;

    tx.commit().await.unwrap();
    detect(&app).await;
    let r = anomalies_of(&mut db, "REVOKED_KEY_IN_USE").await;
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, Some(revoked));
    assert_eq!(r[0].1["refusals"], 3);
    let e = anomalies_of(&mut db, "EXPIRED_KEY_IN_USE").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, Some(expired));
    assert!(anomalies_of(&mut db, "IP_NOT_ALLOWED_BURST").await.is_empty());
}

#[tokio::test]
async fn an_ip_not_allowed_burst_is_raised_above_its_threshold_only() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    let burst = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, burst, minute(now), 1, json!({"IP_NOT_ALLOWED": 15})).await;
    usage(&mut tx, burst, minute(now) - Duration::MINUTE, 0, json!({"IP_NOT_ALLOWED": 10})).await;
    let few = key_row(&mut tx, now, Duration::days(1)).await;
    usage(&mut tx, few, minute(now), 100, json!({"IP_NOT_ALLOWED": 4})).await;
    tx.commit().await.unwrap();
    detect(&app).await;
    let found = anomalies_of(&mut db, "IP_NOT_ALLOWED_BURST").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, Some(burst));
    assert_eq!(found[0].1["refusals"], 25);
}

async fn ip(db: &mut PgConnection, key: Uuid, addr: String, first: OffsetDateTime) {
    sqlx::query("INSERT INTO key_usage_ips (key_id, ip, first_seen, last_seen) VALUES ($1, $2, $3, $3)")
        .bind(key)
        .bind(addr)
        .bind(first)
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test]
async fn many_never_seen_addresses_for_an_established_key_are_a_new_ip_burst() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    let established = key_row(&mut tx, now, Duration::days(30)).await;
    ip(&mut tx, established, "198.51.100.1".into(), now - Duration::days(3)).await;
    for i in 0..25 {
        ip(&mut tx, established, format!("203.0.113.{i}"), now - Duration::minutes(2)).await;
    }
    let calm = key_row(&mut tx, now, Duration::days(30)).await;
    ip(&mut tx, calm, "198.51.100.2".into(), now - Duration::days(3)).await;
    for i in 0..3 {
        ip(&mut tx, calm, format!("192.0.2.{i}"), now - Duration::minutes(2)).await;
    }
    // A key seen for the first time from many places has no "usual" places to differ from.
    let launch = key_row(&mut tx, now, Duration::minutes(5)).await;
    for i in 0..25 {
        ip(&mut tx, launch, format!("192.0.2.{}", 100 + i), now - Duration::minutes(1)).await;
    }
    tx.commit().await.unwrap();
    detect(&app).await;
    let found = anomalies_of(&mut db, "NEW_IP_BURST").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(established));
    assert_eq!(found[0].1["new_addresses"], 25);
}

#[tokio::test]
async fn many_unknown_keys_from_one_source_are_brute_force() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    for (source, per_minute) in [("203.0.113.66", 20i64), ("198.51.100.7", 3)] {
        for m in 0..3 {
            sqlx::query("INSERT INTO source_failures (source, minute, count) VALUES ($1, $2, $3)")
                .bind(source)
                .bind(minute(now) - Duration::minutes(m))
                .bind(per_minute)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    tx.commit().await.unwrap();
    detect(&app).await;
    let found: Vec<(String, Value)> =
        sqlx::query_as("SELECT subject, details FROM anomalies WHERE kind = 'BRUTE_FORCE'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "203.0.113.66");
    assert_eq!(found[0].1["refusals"], 60);

    // And the admin API lists it.
    let admin = app.admin_token().await;
    let listed: Value = app.get_auth("/v1/admin/anomalies", &admin).await.json().await.unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], "BRUTE_FORCE");
    assert!(listed[0]["id"].is_string() && listed[0]["detected_at"].is_string());
    assert!(listed[0].get("key_id").is_none());
    let since = (now + Duration::HOUR).format(&time::format_description::well_known::Rfc3339).unwrap();
    let later: Value = app.get_auth(&format!("/v1/admin/anomalies?since={since}"), &admin).await.json().await.unwrap();
    assert_eq!(later, json!([]));
}

#[tokio::test]
async fn old_minute_buckets_roll_up_into_hours_exactly_once() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    // Seeded in one transaction: the app's own detector (every 10 s) sees all of it or none.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let now = app.clock.now();
    let key = key_row(&mut tx, now, Duration::days(10)).await;
    let hour =
        (now - Duration::days(3)).replace_minute(0).unwrap().replace_second(0).unwrap().replace_nanosecond(0).unwrap();
    usage(&mut tx, key, hour, 5, json!({"EXPIRED": 1})).await;
    usage(&mut tx, key, hour + Duration::minutes(7), 6, json!({"EXPIRED": 2, "REVOKED": 1})).await;
    usage(&mut tx, key, minute(now), 9, json!({})).await;
    // Which addresses used it, and the latest use each row counted: minutes of the old hour become
    // one row for the hour with the union of their addresses and the latest of their uses.
    for (start, ips, last) in [
        (hour, vec!["203.0.113.1"], hour + Duration::seconds(5)),
        (hour + Duration::minutes(7), vec!["203.0.113.1", "203.0.113.2"], hour + Duration::seconds(7 * 60 + 9)),
        (minute(now), vec!["203.0.113.3"], minute(now)),
    ] {
        sqlx::query("UPDATE key_usage SET ips = $3, last_at = $4, last_ip = $3[1] WHERE key_id = $1 AND start = $2")
            .bind(key)
            .bind(start)
            .bind(ips)
            .bind(last)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    roll_up(&app).await;
    roll_up(&app).await;
    let ips: Vec<(String, OffsetDateTime, Vec<String>, OffsetDateTime, String)> = sqlx::query_as(
        "SELECT bucket, start, ips, last_at, last_ip FROM key_usage WHERE key_id = $1 ORDER BY bucket, start",
    )
    .bind(key)
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        ips,
        vec![
            (
                "hour".to_owned(),
                hour,
                vec!["203.0.113.1".to_owned(), "203.0.113.2".to_owned()],
                hour + Duration::seconds(7 * 60 + 9),
                "203.0.113.1".to_owned()
            ),
            ("minute".to_owned(), minute(now), vec!["203.0.113.3".to_owned()], minute(now), "203.0.113.3".to_owned()),
        ]
    );
    let rows: Vec<(String, OffsetDateTime, i64, Value)> =
        sqlx::query_as("SELECT bucket, start, valid, denied FROM key_usage WHERE key_id = $1 ORDER BY start")
            .bind(key)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1, rows[0].2), ("hour", hour, 11));
    assert_eq!(rows[0].3, json!({"EXPIRED": 3, "REVOKED": 1}));
    assert_eq!((rows[1].0.as_str(), rows[1].2), ("minute", 9));
}

/// A token that may create, revoke and verify keys.
async fn key_token(app: &TestApp) -> String {
    app.token_with_scopes(&["keys:read", "keys:write", "keys:verify"]).await
}

async fn verify(app: &TestApp, token: &str, key: &str, ip: &str) -> Value {
    app.post_json("/v1/keys/verify", token, &json!({"key": key, "ip": ip})).await.json().await.unwrap()
}

#[tokio::test]
async fn verifications_of_a_revoked_key_end_to_end_raise_revoked_key_in_use() {
    let app = spawn_app().await;
    let token = key_token(&app).await;
    let created: Value = app
        .post_json("/v1/keys", &token, &json!({"name": "ci", "scopes": ["deploy"], "environment": "live"}))
        .await
        .json()
        .await
        .unwrap();
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    // Normal use first: nothing to report.
    for _ in 0..20 {
        assert_eq!(verify(&app, &token, &key, "198.51.100.10").await["valid"], true);
    }
    app.parts.usage.flush(&app.parts.db).await.unwrap();
    detect(&app).await;
    let mut db = app.db().await;
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies").fetch_one(&mut db).await.unwrap();
    assert_eq!(none, 0, "normal use raised an anomaly");

    assert_eq!(app.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await.status(), 200);
    for _ in 0..3 {
        assert_eq!(verify(&app, &token, &key, "198.51.100.10").await["code"], "REVOKED");
    }
    app.parts.usage.flush(&app.parts.db).await.unwrap();
    detect(&app).await;
    let found = anomalies_of(&mut db, "REVOKED_KEY_IN_USE").await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0.map(|u| u.to_string()), Some(id));
    assert_eq!(found[0].1["refusals"], 3);
}

#[tokio::test]
async fn many_unknown_keys_from_one_address_end_to_end_raise_brute_force() {
    let app = spawn_app().await;
    let token = key_token(&app).await;
    let body = "A".repeat(32);
    for i in 0..60 {
        // Alternately well-formed-but-unknown-looking and plainly malformed keys.
        let key = if i % 2 == 0 { format!("tsk_live_{body}{i:06}") } else { format!("nope-{i}") };
        let res = verify(&app, &token, &key, "203.0.113.9").await;
        assert_eq!(res["valid"], false);
    }
    // Someone else mistyping a key twice is not an attack.
    for _ in 0..2 {
        verify(&app, &token, "tsk_live_typo", "198.51.100.20").await;
    }
    app.parts.usage.flush(&app.parts.db).await.unwrap();
    detect(&app).await;
    let mut db = app.db().await;
    let found: Vec<(String, Value)> =
        sqlx::query_as("SELECT subject, details FROM anomalies WHERE kind = 'BRUTE_FORCE'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "203.0.113.9");
    assert_eq!(found[0].1["refusals"], 60);
}

#[tokio::test]
async fn the_roll_up_enforces_every_retention() {
    // The shortest hour retention the configuration accepts: one day.
    let app = TestAppBuilder::new().set("TESSERA_USAGE_HOUR_RETENTION", "86400").spawn().await;
    let mut db = app.db().await;
    let now = app.clock.now();
    let hour_of =
        |t: OffsetDateTime| t.replace_minute(0).unwrap().replace_second(0).unwrap().replace_nanosecond(0).unwrap();
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    let key = key_row(&mut tx, now, Duration::days(10)).await;
    for (start, valid) in [(hour_of(now - Duration::days(2)), 1i64), (hour_of(now - Duration::hours(3)), 2)] {
        sqlx::query("INSERT INTO key_usage (key_id, bucket, start, valid, denied) VALUES ($1, 'hour', $2, $3, '{}')")
            .bind(key)
            .bind(start)
            .bind(valid)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE key_usage SET ips = ARRAY[$3], last_at = $2, last_ip = $3 WHERE key_id = $1 AND start = $2",
        )
        .bind(key)
        .bind(start)
        .bind(format!("192.0.2.{valid}"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    for (source, at) in [("203.0.113.1", now - Duration::days(2)), ("203.0.113.2", now - Duration::hours(1))] {
        sqlx::query("INSERT INTO source_failures (source, minute, count) VALUES ($1, $2, 1)")
            .bind(source)
            .bind(minute(at))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    ip(&mut tx, key, "198.51.100.1".into(), now - Duration::days(2)).await;
    ip(&mut tx, key, "198.51.100.2".into(), now - Duration::hours(1)).await;
    for (kind, at) in [("OLD", now - Duration::days(2)), ("NEW", now - Duration::hours(1))] {
        sqlx::query(
            "INSERT INTO anomalies (id, kind, key_id, subject, window_start, detected_at) VALUES ($1, $2, $3, $2, $4, $4)",
        )
        .bind(Uuid::now_v7())
        .bind(kind)
        .bind(key)
        .bind(at)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    roll_up(&app).await;

    let hours: Vec<i64> = sqlx::query_scalar("SELECT valid FROM key_usage WHERE key_id = $1 AND bucket = 'hour'")
        .bind(key)
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(hours, vec![2], "hour buckets past the retention are deleted, younger ones kept");
    let hour_ips: Vec<Vec<String>> =
        sqlx::query_scalar("SELECT ips FROM key_usage WHERE key_id = $1 AND bucket = 'hour'")
            .bind(key)
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(hour_ips, vec![vec!["192.0.2.2".to_owned()]]);
    // The deleted hour's latest use outlives it on the key's own row (which had none).
    let kept: (Option<OffsetDateTime>, Option<String>) =
        sqlx::query_as("SELECT last_used_at, last_used_ip FROM api_keys WHERE id = $1")
            .bind(key)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(kept, (Some(hour_of(now - Duration::days(2))), Some("192.0.2.1".to_owned())));
    let sources: Vec<String> =
        sqlx::query_scalar("SELECT source FROM source_failures").fetch_all(&mut db).await.unwrap();
    assert_eq!(sources, vec!["203.0.113.2".to_owned()]);
    let ips: Vec<String> = sqlx::query_scalar("SELECT ip::text FROM key_usage_ips WHERE key_id = $1")
        .bind(key)
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(ips.len(), 1, "{ips:?}");
    assert!(ips[0].starts_with("198.51.100.2"), "{ips:?}");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM anomalies").fetch_all(&mut db).await.unwrap();
    assert_eq!(kinds, vec!["NEW".to_owned()]);
}

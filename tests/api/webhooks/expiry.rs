//! Expiry notices on the test clock: 7 days and 1 day before, and at expiry, once each; re-armed
//! when the expiry changes; a rotated key's grace end counts as its expiry.

use super::*;

const DAY: u64 = 86_400;

/// Moves the clock and waits until the receiver holds `n` notices of type `t`.
async fn after(app: &TestApp, rx: &Receiver, secs: u64, t: &str, n: usize) -> Vec<Received> {
    app.clock.advance(Duration::from_secs(secs));
    rx.wait_for(t, n, Duration::from_secs(10)).await
}

#[tokio::test]
async fn expiring_notices_fire_7_days_and_1_day_before_and_expired_at_expiry_once_each() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["api_key.expiring", "api_key.expired"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&app, &writer, json!({"expires_in": 10 * DAY})).await;

    let got = after(&app, &rx, 3 * DAY + 60, "api_key.expiring", 1).await;
    assert_eq!(got[0].json()["data"]["key_id"], key["id"]);
    assert_eq!(got[0].json()["data"]["expires_at"], key["expires_at"]);
    let got = after(&app, &rx, 6 * DAY, "api_key.expiring", 2).await;
    assert_ne!(got[0].id, got[1].id);
    let expired = after(&app, &rx, DAY, "api_key.expired", 1).await;
    assert_eq!(expired[0].json()["data"]["key_id"], key["id"]);

    // Time goes on; nothing fires twice.
    app.clock.advance(Duration::from_secs(30 * DAY));
    let sent = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_deliveries").fetch_one(&app.parts.db).await.unwrap()
    };
    let before = sent().await;
    app.parts.webhooks.send_due_notices().await.unwrap();
    assert_eq!(sent().await, before);
    assert_eq!((rx.of_type("api_key.expiring").len(), rx.of_type("api_key.expired").len()), (2, 1));
}

#[tokio::test]
async fn a_passed_notice_is_skipped_and_changing_the_expiry_re_arms_them() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["api_key.expiring", "api_key.expired", "api_key.created"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    // Three days left: the 7-day notice's moment has already passed and is skipped.
    let key = new_key(&app, &writer, json!({"expires_in": 3 * DAY})).await;
    let id = key["id"].as_str().unwrap();
    rx.wait_for("api_key.created", 1, Duration::from_secs(10)).await;
    let got = after(&app, &rx, 2 * DAY + 60, "api_key.expiring", 1).await;
    assert_eq!(got.len(), 1);

    // Pushed out by 20 days from now: both notices are due again. (The first token has expired
    // on this clock; an admin may edit any key.)
    let admin = app.admin_token().await;
    let res = app
        .http
        .patch(app.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"expires_in": 20 * DAY}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    after(&app, &rx, 13 * DAY + 60, "api_key.expiring", 2).await;
    after(&app, &rx, 6 * DAY, "api_key.expiring", 3).await;
    after(&app, &rx, DAY, "api_key.expired", 1).await;
}

#[tokio::test]
async fn a_rotated_key_expires_when_its_grace_ends() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["api_key.expired", "api_key.rotated"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&app, &writer, json!({})).await;
    let id = key["id"].as_str().unwrap();
    let res = app.post_json(&format!("/v1/keys/{id}/rotate"), &writer, &json!({"grace_period": 3600})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let rotated = rx.wait_for("api_key.rotated", 1, Duration::from_secs(10)).await;
    assert_eq!(rotated[0].json()["data"]["key_id"], key["id"]);
    let got = after(&app, &rx, 3600 + 5, "api_key.expired", 1).await;
    assert_eq!(got[0].json()["data"]["key_id"], key["id"]);
}

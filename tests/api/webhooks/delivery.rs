//! Delivery: signed per Standard Webhooks, retried with the same webhook-id, redirects not
//! followed, 410 disabling the endpoint, owners receiving only their own keys' events, the log.

use super::*;

#[tokio::test]
async fn a_revocation_is_delivered_signed_with_the_endpoint_secret() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    let (_, secret) = endpoint(&app, &admin, &rx.url, &["api_key.created", "api_key.revoked"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&app, &writer, json!({"expires_in": 86_400 * 30})).await;
    revoke_key(&app, &writer, key["id"].as_str().unwrap()).await;

    let got = rx.wait_for("api_key.revoked", 1, Duration::from_secs(10)).await;
    let r = &got[0];
    assert!(signature_verifies(&secret, r), "{r:?}");
    assert!(r.id.starts_with("msg_"));
    let ts: i64 = r.timestamp.parse().unwrap();
    assert!((ts - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 30);
    let body = r.json();
    assert_eq!(body["data"]["key_id"], key["id"]);
    assert_eq!(body["data"]["owner"], key["owner"]);
    assert_eq!(body["data"]["start"], key["start"]);
    assert_eq!(body["data"]["environment"], "live");
    assert_eq!(body["data"]["reason"], "test");
    assert!(body["data"]["expires_at"].is_string());
    assert!(body["timestamp"].is_string());
    assert!(!r.body.contains(key["key"].as_str().unwrap()), "never a secret");
    // A tampered body or another secret does not verify.
    let forged = Received { body: r.body.replace("test", "tset"), ..r.clone() };
    assert!(!signature_verifies(&secret, &forged));
    let created = rx.wait_for("api_key.created", 1, Duration::from_secs(10)).await;
    assert!(signature_verifies(&secret, &created[0]));
    assert_ne!(created[0].id, r.id, "one webhook-id per event");
}

#[tokio::test]
async fn a_receiver_answering_500_once_gets_the_retry_with_the_same_webhook_id() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    // Its body holds a NUL, which Postgres text cannot: the excerpt kept must still be recorded.
    rx.script(&[Reply::StatusBody(500, "oops\0 something broke")]);
    let admin = app.admin_token().await;
    let (id, secret) = endpoint(&app, &admin, &rx.url, &["api_key.revoked"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&app, &writer, json!({})).await;
    revoke_key(&app, &writer, key["id"].as_str().unwrap()).await;

    // The first retry comes within 10 s.
    let got = rx.wait_for("api_key.revoked", 2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, got[1].id);
    assert_eq!(got[0].body, got[1].body, "the body never changes between attempts");
    assert!(signature_verifies(&secret, &got[0]) && signature_verifies(&secret, &got[1]));

    // The attempt is recorded once the receiver has answered it.
    let log: Vec<Value> = eventually(Duration::from_secs(10), "both attempts are logged", || async {
        let log: Value = app.get_auth(&format!("/v1/webhooks/{id}/deliveries"), &admin).await.json().await.unwrap();
        let log = log.as_array().unwrap().clone();
        if log.len() == 2 {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await;
    // Newest first.
    assert_eq!((log[0]["attempt"].as_i64(), log[0]["status"].as_str()), (Some(2), Some("delivered")));
    assert_eq!((log[1]["attempt"].as_i64(), log[1]["status"].as_str()), (Some(1), Some("pending")));
    assert_eq!(log[1]["response_code"], 500);
    assert_eq!(log[0]["type"], "api_key.revoked");
    assert_eq!(log[0]["webhook_id"], id.as_str());
    assert_eq!(log[0]["message_id"], got[0].id.as_str());
    let excerpt: Option<String> = sqlx::query_scalar("SELECT excerpt FROM webhook_attempts WHERE attempt = 1")
        .fetch_one(&app.parts.db)
        .await
        .unwrap();
    assert_eq!(excerpt.as_deref(), Some("oops something broke"));
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_retry_after_is_honoured() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    rx.script(&[
        Reply::StatusWith(302, "location", "http://127.0.0.1:9/elsewhere"),
        Reply::StatusWith(503, "retry-after", "1"),
    ]);
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["webhook.test", "api_key.created"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    new_key(&app, &writer, json!({})).await;
    let got = rx.wait_for("api_key.created", 3, Duration::from_secs(20)).await;
    assert!(got.iter().all(|r| r.id == got[0].id));
    // Retry-After: 1 was honoured (not the 30 s second step of the backoff).
    let (t2, t3): (i64, i64) = (got[1].timestamp.parse().unwrap(), got[2].timestamp.parse().unwrap());
    assert!(t3 - t2 <= 5, "{t2} {t3}");
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    rx.script(&[Reply::Status(410)]);
    let admin = app.admin_token().await;
    let (id, _) = endpoint(&app, &admin, &rx.url, &["api_key.created"]).await;
    let res = app.post_json(&format!("/v1/webhooks/{id}/test"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    rx.wait_for("webhook.test", 1, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(10), "the endpoint is disabled", || async {
        let ep: Value = app.get_auth(&format!("/v1/webhooks/{id}"), &admin).await.json().await.unwrap();
        ep["enabled"] == false
    })
    .await;
    // A disabled endpoint receives nothing more.
    let writer = app.token_with_scopes(&["keys:write"]).await;
    new_key(&app, &writer, json!({})).await;
    let log: Value = app.get_auth(&format!("/v1/webhooks/{id}/deliveries"), &admin).await.json().await.unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    assert_eq!(log[0]["status"], "failed");
    assert_eq!(log[0]["response_code"], 410);
    assert_eq!(rx.got().len(), 1);
}

#[tokio::test]
async fn a_developer_endpoint_receives_only_the_events_of_their_own_keys() {
    let app = spawn_private_ok().await;
    let mine = Receiver::start().await;
    let all = Receiver::start().await;
    let alice = app.token_with_scopes(&["keys:write"]).await;
    let bob = app.token_with_scopes(&["keys:write"]).await;
    let admin = app.admin_token().await;
    endpoint(&app, &alice, &mine.url, &["api_key.created", "signing_key.rotated"]).await;
    endpoint(&app, &admin, &all.url, &["api_key.created", "signing_key.rotated"]).await;
    let bobs = new_key(&app, &bob, json!({})).await;
    let alices = new_key(&app, &alice, json!({})).await;
    let res = app.post_json("/v1/admin/signing-keys/rotate?force=true", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);

    all.wait_for("api_key.created", 2, Duration::from_secs(10)).await;
    let rotated = all.wait_for("signing_key.rotated", 1, Duration::from_secs(10)).await;
    assert!(rotated[0].json()["data"]["kid"].is_string());
    let got = mine.wait_for("api_key.created", 1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["data"]["key_id"], alices["id"]);
    // By the time the admin endpoint had all three, Alice's would have had Bob's too.
    assert!(mine.got().iter().all(|r| r.json()["data"]["key_id"] != bobs["id"]));
    assert!(mine.of_type("signing_key.rotated").is_empty());
}

#[tokio::test]
async fn an_instance_that_refuses_private_destinations_does_not_connect_to_one() {
    // `app` allows private destinations and saves the endpoint; `strict` does not, and runs an
    // hour ahead, so the delivery of an event it makes is due only for it.
    let app = spawn_private_ok().await;
    let mut b = TestAppBuilder::new();
    b.env = app.env.clone();
    b.env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
    b.env.insert("TESSERA_WEBHOOK_ALLOW_PRIVATE".into(), "false".into());
    b.db_name = Some(app.db_name.clone());
    let strict = b.spawn().await;
    strict.clock.advance(Duration::from_secs(3600));
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    let (id, _) = endpoint(&app, &admin, &rx.url, &["api_key.created"]).await;
    let writer = strict.token_with_scopes(&["keys:write"]).await;
    new_key(&strict, &writer, json!({})).await;
    let error: String = eventually(Duration::from_secs(10), "an attempt is logged", || async {
        sqlx::query_scalar::<_, String>("SELECT error FROM webhook_attempts WHERE endpoint_id = $1::uuid")
            .bind(&id)
            .fetch_optional(&strict.parts.db)
            .await
            .unwrap()
    })
    .await;
    assert!(error.contains("private"), "{error}");
    assert!(rx.got().is_empty(), "nothing reached the receiver");
    let log: Value = app.get_auth(&format!("/v1/webhooks/{id}/deliveries"), &admin).await.json().await.unwrap();
    assert_eq!((log[0]["attempt"].as_i64(), log[0]["status"].as_str()), (Some(1), Some("pending")));
}

#[tokio::test]
async fn refresh_token_reuse_reaches_admin_endpoints_with_its_source_and_anomaly() {
    let app = TestAppBuilder::new()
        .set("TESSERA_WEBHOOK_ALLOW_PRIVATE", "true")
        .set("TESSERA_REFRESH_RETRY_GRACE", "0")
        .spawn()
        .await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["refresh_token.reuse_detected", "anomaly.detected"]).await;
    let l = crate::tokens::setup_login(&app, &["a"], &["a"]).await;
    let login: Value = crate::tokens::password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    assert_eq!(crate::tokens::refresh(&app, &l, rt, None).await.status(), StatusCode::OK);
    assert_eq!(crate::tokens::refresh(&app, &l, rt, None).await.status(), StatusCode::BAD_REQUEST);

    let got = rx.wait_for("refresh_token.reuse_detected", 1, Duration::from_secs(10)).await;
    let data = &got[0].json()["data"];
    assert_eq!(data["client_id"], l.client_id.as_str());
    assert_eq!(data["sub"], l.user_id.as_str());
    assert_eq!(data["source_ip"], "127.0.0.1");
    assert!(data["sid"].is_string());
    assert!(!got[0].body.contains(rt), "never the token");
    let anomaly = rx.wait_for("anomaly.detected", 1, Duration::from_secs(10)).await;
    assert_eq!(anomaly[0].json()["data"]["kind"], "REFRESH_TOKEN_REUSE");
}

#[tokio::test]
async fn keys_revoked_with_their_owner_are_announced_one_by_one() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["api_key.revoked"]).await;
    let l = crate::tokens::setup_login(&app, &["keys:write"], &["keys:write"]).await;
    let login: Value = crate::tokens::password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let dev = login["access_token"].as_str().unwrap();
    let a = new_key(&app, dev, json!({})).await;
    let b = new_key(&app, dev, json!({})).await;
    let res = app.delete_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await;
    assert!(res.status().is_success(), "{}", res.status());
    let got = rx.wait_for("api_key.revoked", 2, Duration::from_secs(10)).await;
    let mut ids: Vec<Value> = got.iter().map(|r| r.json()["data"]["key_id"].clone()).collect();
    ids.sort_by_key(|v| v.to_string());
    let mut want = vec![a["id"].clone(), b["id"].clone()];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(ids, want);
    assert!(got.iter().all(|r| r.json()["data"]["reason"] == "owner deleted"));
}

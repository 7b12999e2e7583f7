//! Leak reports: real keys revoked (or flagged), forged ones labelled without touching the
//! database, the anomaly, audit entry and webhooks, never the token itself.

use super::*;

fn sha256_hex(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

async fn report(app: &TestApp, body: &Value) -> reqwest::Response {
    app.http.post(app.url("/v1/keys/leaks")).json(body).send().await.unwrap()
}

async fn verify_code(app: &TestApp, checker: &str, key: &str) -> String {
    let v: Value = app.post_json("/v1/keys/verify", checker, &json!({"key": key})).await.json().await.unwrap();
    if v["valid"] == true {
        "VALID".into()
    } else {
        v["code"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn a_reported_key_is_revoked_and_announced_and_a_forged_one_is_a_false_positive() {
    let app = spawn_private_ok().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    let (_, secret) = endpoint(&app, &admin, &rx.url, &["api_key.leaked", "api_key.revoked", "anomaly.detected"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let checker = app.token_with_scopes(&["keys:verify"]).await;
    let key = new_key(&app, &writer, json!({})).await;
    let plain = key["key"].as_str().unwrap().to_owned();
    // Same shape, wrong checksum.
    let mut forged = plain.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });

    let body = json!([
        {"token": plain, "type": "tessera_api_key", "url": "https://github.com/o/r/blob/main/.env", "source": "github", "extra": true},
        {"token": forged, "type": "tessera_api_key", "url": "javascript:alert(1)"},
        {"token": "not-a-key-at-all"}
    ]);
    let res = report(&app, &body).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(&plain) && !text.contains(&forged), "never echoed");
    let labels: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        labels,
        json!([
            {"token_hash": sha256_hex(&plain), "token_type": "tessera_api_key", "label": "true_positive"},
            {"token_hash": sha256_hex(&forged), "token_type": "tessera_api_key", "label": "false_positive"},
            {"token_hash": sha256_hex("not-a-key-at-all"), "token_type": null, "label": "false_positive"}
        ])
    );
    assert_eq!(verify_code(&app, &checker, &plain).await, "REVOKED");

    let leaked = rx.wait_for("api_key.leaked", 1, Duration::from_secs(10)).await;
    assert!(signature_verifies(&secret, &leaked[0]));
    let data = &leaked[0].json()["data"];
    assert_eq!(data["key_id"], key["id"]);
    assert_eq!(data["url"], "https://github.com/o/r/blob/main/.env");
    assert_eq!(data["source"], "github");
    rx.wait_for("api_key.revoked", 1, Duration::from_secs(10)).await;
    let anomaly = rx.wait_for("anomaly.detected", 1, Duration::from_secs(10)).await;
    assert_eq!(anomaly[0].json()["data"]["kind"], "KEY_LEAKED");

    let anomalies: Value = app.get_auth("/v1/admin/anomalies", &admin).await.json().await.unwrap();
    let a = anomalies.as_array().unwrap().iter().find(|a| a["kind"] == "KEY_LEAKED").unwrap();
    assert_eq!(a["key_id"], key["id"]);
    assert_eq!(a["details"]["url"], "https://github.com/o/r/blob/main/.env");
    assert_eq!(a["details"]["source"], "github");
    let audit: Value = app.get_auth("/v1/admin/audit", &admin).await.json().await.unwrap();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "api_key.leak_reported" && e["target_id"] == key["id"]));

    // Reported again (already revoked): still a true positive.
    let again: Value = report(&app, &json!([{"token": plain}])).await.json().await.unwrap();
    assert_eq!(again[0]["label"], "true_positive");
    assert!(!captured_logs().contains(&plain));
    assert!(!captured_logs().contains(&forged));
}

#[tokio::test]
async fn a_token_with_a_bad_checksum_is_labelled_without_the_database() {
    let app = spawn_app().await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&app, &writer, json!({})).await;
    let mut forged = key["key"].as_str().unwrap().to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    // With the database out of reach, a forged token is still answered...
    app.parts.db.close().await;
    let res = report(&app, &json!([{"token": forged, "type": "t"}])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let labels: Value = res.json().await.unwrap();
    assert_eq!(labels[0]["label"], "false_positive");
    // ...while a well-formed one needs it.
    let res = report(&app, &json!([{"token": key["key"]}])).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn with_the_notify_policy_a_reported_key_keeps_working() {
    let app = TestAppBuilder::new()
        .set("TESSERA_WEBHOOK_ALLOW_PRIVATE", "true")
        .set("TESSERA_LEAK_POLICY", "notify")
        .spawn()
        .await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    endpoint(&app, &admin, &rx.url, &["api_key.leaked", "api_key.revoked"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    let checker = app.token_with_scopes(&["keys:verify"]).await;
    let key = new_key(&app, &writer, json!({})).await;
    let plain = key["key"].as_str().unwrap();
    let labels: Value = report(&app, &json!([{"token": plain, "source": "gitleaks"}])).await.json().await.unwrap();
    assert_eq!(labels[0]["label"], "true_positive");
    rx.wait_for("api_key.leaked", 1, Duration::from_secs(10)).await;
    assert_eq!(verify_code(&app, &checker, plain).await, "VALID");
    assert!(rx.of_type("api_key.revoked").is_empty());
}

#[tokio::test]
async fn oversized_reports_are_413_and_reports_are_throttled_per_source() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..1001).map(|i| json!({"token": format!("t{i}")})).collect();
    assert_eq!(report(&app, &Value::Array(many)).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let big = json!([{"token": "x", "type": "y".repeat(1100 * 1024)}]);
    assert_eq!(report(&app, &big).await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Over 64 KiB but under 1 MiB is accepted here.
    let mid = json!([{"token": "x", "pad": "y".repeat(200 * 1024)}]);
    assert_eq!(report(&app, &mid).await.status(), StatusCode::OK);
    assert_eq!(report(&app, &json!({"token": "x"})).await.status(), StatusCode::BAD_REQUEST);
    let mut last = StatusCode::OK;
    for _ in 0..40 {
        last = report(&app, &json!([{"token": "x"}])).await.status();
        if last != StatusCode::OK {
            break;
        }
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

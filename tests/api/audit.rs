//! The audit log and the operational metrics.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    signing::parts,
    tokens::{password_grant, refresh, setup_login},
};

#[tokio::test]
async fn every_admin_mutation_is_audited_with_its_actor_address_and_request_id() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let kid = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    // Forced: the next key was published a moment ago (see signing.rs for the refusal).
    let res = app.post_json("/v1/admin/signing-keys/rotate?force=true", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .http
        .post(app.url(&format!("/v1/admin/signing-keys/{kid}/revoke")))
        .bearer_auth(&admin)
        .header("x-request-id", "req-audit-1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let admin = app.admin_token().await;
    app.delete_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await;
    app.delete_auth(&format!("/v1/admin/clients/{}", l.client_id), &admin).await;

    let entries: Value = app.get_auth("/v1/admin/audit?limit=100", &admin).await.json().await.unwrap();
    let entries = entries.as_array().unwrap();
    let find = |action: &str, target: &str| {
        entries
            .iter()
            .find(|e| e["action"] == action && e["target_id"] == target)
            .unwrap_or_else(|| panic!("no {action} on {target}: {entries:?}"))
            .clone()
    };
    for (action, target) in [
        ("client.create", l.client_id.as_str()),
        ("user.create", l.user_id.as_str()),
        ("signing_key.revoke", kid.as_str()),
        ("user.delete", l.user_id.as_str()),
        ("client.disable", l.client_id.as_str()),
    ] {
        let e = find(action, target);
        assert_eq!(e["actor"], "admin", "{e}");
        assert_eq!(e["ip"], "127.0.0.1");
        assert!(e["at"].is_string() && e["id"].is_string());
    }
    assert_eq!(find("signing_key.revoke", &kid)["request_id"], "req-audit-1");
    assert!(entries.iter().any(|e| e["action"] == "signing_key.rotate"));

    // Filters.
    let only: Value =
        app.get_auth(&format!("/v1/admin/audit?target_id={}", l.user_id), &admin).await.json().await.unwrap();
    let actions: Vec<&str> = only.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["user.create", "user.delete"]);
    let none: Value = app.get_auth("/v1/admin/audit?actor=nobody", &admin).await.json().await.unwrap();
    assert_eq!(none, json!([]));
    // The bootstrap admin client, made at start from TESSERA_BOOTSTRAP_ADMIN_SECRET, is audited too.
    let boot = entries.iter().find(|e| e["action"] == "client.bootstrap_create").expect("bootstrap audited");
    assert_eq!(boot["target_id"], "admin");
    assert_eq!(boot["actor"], "system");
    // since= keeps what happened at or after it.
    let cut = find("user.delete", l.user_id.as_str())["at"].as_str().unwrap().to_owned();
    let since: Value = app
        .http
        .get(app.url("/v1/admin/audit"))
        .query(&[("since", cut.as_str()), ("limit", "100")])
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let since = since.as_array().unwrap();
    assert!(
        since.iter().any(|e| e["action"] == "user.delete") && since.iter().any(|e| e["action"] == "client.disable")
    );
    assert!(
        since.iter().all(|e| e["action"] != "user.create" && e["action"] != "client.bootstrap_create"),
        "{since:?}"
    );
    assert_problem(app.get_auth("/v1/admin/audit?limit=0", &admin).await, 400, "INVALID_REQUEST").await;
    assert_problem(app.get_auth("/v1/admin/audit?since=yesterday", &admin).await, 400, "INVALID_REQUEST").await;
    let weak = app.token_with_scopes(&["keys:read"]).await;
    assert_problem(app.get_auth("/v1/admin/audit", &weak).await, 403, "INSUFFICIENT_SCOPE").await;
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_metrics_move_with_issuance_reuse_and_revocation() {
    let app = spawn_app().await;
    let scrape = || async { app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    let first: Value = refresh(&app, &l, rt, None).await.json().await.unwrap();
    assert_eq!(refresh(&app, &l, rt, None).await.status(), reqwest::StatusCode::OK, "a retry within the grace");
    let successor = first["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&app, &l, successor, None).await.status(), reqwest::StatusCode::OK);
    refresh(&app, &l, rt, None).await; // reuse: the successor was used
    let after = scrape().await;
    let moved = |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert!(moved("tokens_issued_total", "grant=\"client_credentials\"") >= 1.0);
    assert!(moved("tokens_issued_total", "grant=\"password\"") >= 1.0);
    assert!(moved("tokens_issued_total", "grant=\"refresh_token\"") >= 1.0);
    assert!(moved("refresh_token_reuse_total", "") >= 1.0);
    assert!(moved("refresh_token_retries_total", "") >= 1.0);
    assert!(moved("revocations_total", "kind=\"refresh_family\"") >= 1.0);
    assert!(moved("anomalies_total", "kind=\"REFRESH_TOKEN_REUSE\"") >= 1.0);
    assert!(after.contains("outbox_pending_events") || after.contains("outbox_published_total"));
}

#[tokio::test]
async fn the_metrics_move_with_api_key_verification_caching_and_revocation() {
    let app = spawn_app().await;
    let scrape = || async { app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let token = app.token_with_scopes(&["keys:write", "keys:verify"]).await;
    let key: Value = app
        .post_json("/v1/keys", &token, &json!({"name": "m", "scopes": [], "environment": "live"}))
        .await
        .json()
        .await
        .unwrap();
    let (id, secret) = (key["id"].as_str().unwrap().to_owned(), key["key"].as_str().unwrap().to_owned());
    let verify = |k: String| {
        let (app, token) = (&app, &token);
        async move { app.post_json("/v1/keys/verify", token, &json!({"key": k})).await.json::<Value>().await.unwrap() }
    };
    let before = scrape().await;
    assert_eq!(verify(secret.clone()).await["valid"], true); // a miss, then cached
    assert_eq!(verify(secret.clone()).await["valid"], true); // a hit
    let unknown = tessera::apikeys::ApiKeySecret::generate(tessera::apikeys::Environment::Live);
    assert_eq!(verify(unknown.expose().to_owned()).await["code"], "NOT_FOUND");
    assert_eq!(verify("tsk_live_nonsense".into()).await["code"], "MALFORMED");
    let res = app.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(verify(secret).await["code"], "REVOKED");
    let after = scrape().await;
    let moved = |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert!(moved("api_key_verifications_total", "result=\"VALID\"") >= 2.0);
    assert!(moved("api_key_verifications_total", "result=\"NOT_FOUND\"") >= 1.0);
    assert!(moved("api_key_verifications_total", "result=\"MALFORMED\"") >= 1.0);
    assert!(moved("api_key_verifications_total", "result=\"REVOKED\"") >= 1.0);
    assert!(moved("api_key_cache_lookups_total", "result=\"hit\"") >= 1.0);
    assert!(moved("api_key_cache_lookups_total", "result=\"miss\"") >= 1.0);
    assert!(moved("revocations_total", "kind=\"api_key\"") >= 1.0);
    let route = "route=\"/v1/keys/verify\"";
    assert!(moved("http_requests_total", route) >= 5.0);
    assert!(moved("http_request_duration_seconds_count", route) >= 5.0);
}

/// Pages of `limit` entries through `path` (with `after` = the last id of each page), until empty.
async fn all_pages(app: &TestApp, token: &str, path: &str, limit: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    loop {
        let after = ids.last().map(|id| format!("&after={id}")).unwrap_or_default();
        let res = app.get_auth(&format!("{path}&limit={limit}{after}"), token).await;
        assert_eq!(res.status(), StatusCode::OK);
        let page: Vec<Value> = res.json().await.unwrap();
        assert!(page.len() <= limit);
        if page.is_empty() {
            return ids;
        }
        ids.extend(page.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
    }
}

#[tokio::test]
async fn audit_and_anomaly_pages_never_repeat_or_skip_entries_that_share_a_time() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut db = app.db().await;
    let at = app.clock.now() - time::Duration::hours(1);
    let mut audit_ids = Vec::new();
    let mut anomaly_ids = Vec::new();
    for i in 0..7 {
        let id = uuid::Uuid::new_v4(); // random: order by id must not follow insertion
        sqlx::query("INSERT INTO audit_log (id, at, actor, action, target_type, target_id, details) VALUES ($1, $2, 'system', 'test.tie', 'tie', $3, '{}')")
            .bind(id)
            .bind(at)
            .bind(i.to_string())
            .execute(&mut db)
            .await
            .unwrap();
        audit_ids.push(id.to_string());
        let id = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO anomalies (id, kind, subject, window_start, detected_at) VALUES ($1, 'TIE_TEST', $2, $3, $3)",
        )
        .bind(id)
        .bind(i.to_string())
        .bind(at)
        .execute(&mut db)
        .await
        .unwrap();
        anomaly_ids.push(id.to_string());
    }
    audit_ids.sort();
    anomaly_ids.sort();
    let paged = all_pages(&app, &admin, "/v1/admin/audit?target_type=tie", 3).await;
    assert_eq!(paged, audit_ids, "every entry once, in (at, id) order");
    let paged = all_pages(&app, &admin, "/v1/admin/anomalies?kind=TIE_TEST", 3).await;
    assert_eq!(paged, anomaly_ids);
}

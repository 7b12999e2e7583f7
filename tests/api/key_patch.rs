//! Editing API keys: PATCH of every field with `null` and absent told apart, status and `?status=`,
//! disabling and enabling across instances within a second, revoked keys staying revoked, audit,
//! and bad input refused with a 400 that names the field.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

async fn patch(app: &TestApp, token: &str, id: &str, body: &Value) -> reqwest::Response {
    app.http.patch(app.url(&format!("/v1/keys/{id}"))).bearer_auth(token).json(body).send().await.unwrap()
}

async fn patched(app: &TestApp, token: &str, id: &str, body: &Value) -> Value {
    let res = patch(app, token, id, body).await;
    assert_eq!(res.status(), StatusCode::OK, "{body}");
    res.json().await.unwrap()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED, "{body}");
    res.json().await.unwrap()
}

async fn simple_key(app: &TestApp, token: &str) -> Value {
    create(app, token, json!({"name": "ci", "scopes": ["deploy", "read"], "environment": "live"})).await
}

async fn get(app: &TestApp, token: &str, id: &str) -> Value {
    let res = app.get_auth(&format!("/v1/keys/{id}"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

/// The verification code (`VALID` when valid).
async fn code(app: &TestApp, token: &str, key: &str) -> String {
    let res = app.post_json("/v1/keys/verify", token, &json!({"key": key})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    if v["valid"] == true {
        "VALID".into()
    } else {
        v["code"].as_str().unwrap().to_owned()
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[tokio::test]
async fn patch_changes_only_the_fields_given_and_get_shows_them() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = create(
        &app,
        &token,
        json!({"name": "ci", "scopes": ["deploy", "read"], "environment": "live", "metadata": {"team": "ops"},
               "allowed_cidrs": ["10.0.0.0/8"], "expires_in": 3600}),
    )
    .await;
    let id = s(&key, "id");
    assert_eq!((&key["enabled"], &key["status"]), (&json!(true), &json!("active")));
    for field in ["rate_limit", "credits", "refill"] {
        assert!(key[field].is_null(), "{field}: {key}");
    }

    // An empty PATCH changes nothing.
    let same = patched(&app, &token, id, &json!({})).await;
    assert_eq!(same["name"], "ci");
    assert_eq!(same["expires_at"], key["expires_at"]);

    let at = "2036-01-02T03:04:05Z";
    let body = json!({"name": "renamed", "scopes": ["read"], "metadata": {"team": "payments"}, "expires_at": at,
                      "allowed_cidrs": ["203.0.113.7", "2001:db8::/32"], "rate_limit": {"limit": 100, "window": 60},
                      "credits": 500, "refill": {"amount": 1000, "interval": 86400}});
    let after = patched(&app, &token, id, &body).await;
    let shown = get(&app, &token, id).await;
    for v in [&after, &shown] {
        assert_eq!(v["name"], "renamed", "{v}");
        assert_eq!(v["scopes"], json!(["read"]));
        assert_eq!(v["effective_scopes"], json!(["read"]));
        assert_eq!(v["metadata"], json!({"team": "payments"}));
        assert_eq!(v["expires_at"], at);
        assert_eq!(v["allowed_cidrs"], json!(["203.0.113.7/32", "2001:db8::/32"]));
        assert_eq!(v["rate_limit"], json!({"limit": 100, "window": 60}));
        assert_eq!(v["credits"], 500);
        assert_eq!(v["refill"], json!({"amount": 1000, "interval": 86400}));
        assert_eq!(v["status"], "active");
        assert_eq!(v["start"], key["start"]);
    }
    // Fields left out stay; `null` removes an expiry or a limit (and credits take their refill with them).
    let cleared = patched(&app, &token, id, &json!({"expires_at": null, "rate_limit": null, "credits": null})).await;
    assert_eq!(cleared["name"], "renamed");
    for field in ["expires_at", "rate_limit", "credits", "refill"] {
        assert!(cleared[field].is_null(), "{field}: {cleared}");
    }
    // expires_in is accepted too; a refill alone starts the balance at its amount.
    let again = patched(&app, &token, id, &json!({"expires_in": 60, "refill": {"amount": 7, "interval": 60}})).await;
    assert!(again["expires_at"].is_string());
    assert_eq!((&again["credits"], &again["refill"]), (&json!(7), &json!({"amount": 7, "interval": 60})));
    assert_eq!(code(&app, &token, s(&key, "key")).await, "IP_NOT_ALLOWED", "the new allow-list holds");
}

#[tokio::test]
async fn creation_takes_and_echoes_limits_and_an_expiry_time() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let at = "2031-06-01T00:00:00Z";
    let key = create(
        &app,
        &token,
        json!({"name": "metered", "scopes": [], "environment": "test", "expires_at": at,
               "rate_limit": {"limit": 10, "window": 1}, "credits": 3, "refill": {"amount": 5, "interval": 3600}}),
    )
    .await;
    assert_eq!(key["expires_at"], at);
    assert_eq!(key["rate_limit"], json!({"limit": 10, "window": 1}));
    assert_eq!((&key["credits"], &key["refill"]), (&json!(3), &json!({"amount": 5, "interval": 3600})));
    let res = app.post_json("/v1/keys/verify", &token, &json!({"key": s(&key, "key")})).await;
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!((v["rate_limit"]["limit"].as_i64(), v["rate_limit"]["remaining"].as_i64()), (Some(10), Some(9)));
    assert_eq!(v["credits_remaining"], 2);
}

#[tokio::test]
async fn a_disabled_key_is_refused_on_another_instance_within_a_second_and_enabling_it_works_everywhere() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let peer = app.spawn_peer().await;
    let token = app.token_with_scopes(&ALL).await;
    let admin = app.admin_token().await;
    let key = simple_key(&app, &token).await;
    let (id, secret) = (s(&key, "id"), s(&key, "key"));
    // Both instances cache the key.
    assert_eq!(code(&app, &token, secret).await, "VALID");
    assert_eq!(code(&peer, &token, secret).await, "VALID");

    let t0 = Instant::now();
    let disabled = patched(&app, &token, id, &json!({"enabled": false})).await;
    assert_eq!((&disabled["enabled"], &disabled["status"]), (&json!(false), &json!("disabled")));
    assert_eq!(code(&app, &token, secret).await, "DISABLED", "at once where it was changed");
    eventually(Duration::from_secs(1).saturating_sub(t0.elapsed()), "DISABLED on the peer", || async {
        code(&peer, &token, secret).await == "DISABLED"
    })
    .await;
    // An invalid answer says only why.
    let v: Value = peer.post_json("/v1/keys/verify", &token, &json!({"key": secret})).await.json().await.unwrap();
    assert_eq!(v, json!({"valid": false, "code": "DISABLED"}));
    // Published as an api_key_changed event for verifiers outside Tessera.
    let events: Value = app.get_auth("/v1/revocations?after=0&limit=1000", &admin).await.json().await.unwrap();
    let changed: Vec<&Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "api_key_changed").collect();
    assert_eq!(changed.len(), 1, "{events}");
    assert_eq!(changed[0]["id"], id);
    // Listed by status on either instance.
    let listed: Vec<Value> = peer.get_auth("/v1/keys?status=disabled", &token).await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], id);

    // Enabling it again is not a narrowing, but it reaches the peer at once too.
    let t1 = Instant::now();
    let enabled = patched(&app, &token, id, &json!({"enabled": true})).await;
    assert_eq!(enabled["status"], "active");
    assert_eq!(code(&app, &token, secret).await, "VALID");
    eventually(Duration::from_secs(1).saturating_sub(t1.elapsed()), "VALID on the peer", || async {
        code(&peer, &token, secret).await == "VALID"
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_cannot_be_patched_back_to_life() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = simple_key(&app, &token).await;
    let id = s(&key, "id");
    assert_eq!(app.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await.status(), StatusCode::OK);
    for body in [json!({"enabled": true}), json!({"name": "zombie"}), json!({})] {
        assert_problem(patch(&app, &token, id, &body).await, 409, "KEY_REVOKED").await;
    }
    let shown = get(&app, &token, id).await;
    assert_eq!((&shown["status"], &shown["name"]), (&json!("revoked"), &json!("ci")));
    assert_eq!(code(&app, &token, s(&key, "key")).await, "REVOKED");
}

#[tokio::test]
async fn status_is_shown_and_filters_lists_in_verification_order() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let active = simple_key(&app, &token).await;
    let disabled = simple_key(&app, &token).await;
    patched(&app, &token, s(&disabled, "id"), &json!({"enabled": false})).await;
    let expired =
        create(&app, &token, json!({"name": "e", "scopes": [], "environment": "live", "expires_in": 5})).await;
    let revoked = simple_key(&app, &token).await;
    app.post_json(&format!("/v1/keys/{}/revoke", s(&revoked, "id")), &token, &json!({})).await;
    let rotated = simple_key(&app, &token).await;
    let successor: Value = app
        .post_json(&format!("/v1/keys/{}/rotate", s(&rotated, "id")), &token, &json!({"grace_period": 3600}))
        .await
        .json()
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(10));

    let admin = app.admin_token().await;
    for (status, want) in [
        ("active", vec![&active, &successor]),
        ("disabled", vec![&disabled]),
        ("expired", vec![&expired]),
        ("revoked", vec![&revoked]),
        ("rotating", vec![&rotated]),
    ] {
        let mine: Vec<Value> = app.get_auth(&format!("/v1/keys?status={status}"), &token).await.json().await.unwrap();
        let ids: Vec<&str> = mine.iter().map(|k| s(k, "id")).collect();
        let expect: Vec<&str> = want.iter().map(|k| s(k, "id")).collect();
        assert_eq!(ids, expect, "{status}");
        assert!(mine.iter().all(|k| k["status"] == status));
        // The admin listing filters the same way.
        let all: Vec<Value> =
            app.get_auth(&format!("/v1/admin/keys?status={status}"), &admin).await.json().await.unwrap();
        let all: Vec<&str> = all.iter().map(|k| s(k, "id")).collect();
        assert_eq!(all, expect, "admin {status}");
    }
    let every: Vec<Value> = app.get_auth("/v1/keys", &token).await.json().await.unwrap();
    assert_eq!(every.len(), 6);
    assert_problem(app.get_auth("/v1/keys?status=sleeping", &token).await, 400, "INVALID_REQUEST").await;
    // A disabled key that has also expired verifies as DISABLED, and so is its status.
    patched(&app, &token, s(&expired, "id"), &json!({"enabled": false})).await;
    assert_eq!(get(&app, &token, s(&expired, "id")).await["status"], "disabled");
    assert_eq!(code(&app, &token, s(&expired, "key")).await, "DISABLED");
}

#[tokio::test]
async fn scopes_stay_within_key_scopes_and_other_owners_keys_are_not_found() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "c", "grant_types": ["client_credentials"], "scopes": ALL, "key_scopes": ["read", "deploy"]}),
        )
        .await;
    let client: Value = res.json().await.unwrap();
    let res = app.token_for(s(&client, "client_id"), s(&client, "client_secret"), None).await;
    let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    let key = simple_key(&app, &token).await;
    let id = s(&key, "id");
    let body =
        assert_problem(patch(&app, &token, id, &json!({"scopes": ["read", "write"]})).await, 403, "SCOPE_NOT_ALLOWED")
            .await;
    assert!(s(&body, "detail").contains("write"), "{body}");
    assert_problem(patch(&app, &token, id, &json!({"scopes": ["admin"]})).await, 400, "SCOPE_RESERVED").await;
    assert_eq!(patched(&app, &token, id, &json!({"scopes": ["deploy"]})).await["scopes"], json!(["deploy"]));

    let stranger = app.token_with_scopes(&ALL).await;
    assert_problem(patch(&app, &stranger, id, &json!({"name": "mine"})).await, 404, "NOT_FOUND").await;
    let reader = app.token_with_scopes(&["keys:read"]).await;
    assert_problem(patch(&app, &reader, id, &json!({"name": "x"})).await, 403, "INSUFFICIENT_SCOPE").await;
    // An admin may edit anyone's key.
    assert_eq!(patched(&app, &admin, id, &json!({"name": "by admin"})).await["name"], "by admin");
}

#[tokio::test]
async fn a_rotated_keys_expiry_can_be_brought_forward_but_not_pushed_past_its_grace() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = simple_key(&app, &token).await;
    let id = s(&key, "id");
    let res = app.post_json(&format!("/v1/keys/{id}/rotate"), &token, &json!({"grace_period": 3600})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let grace_end = get(&app, &token, id).await["expires_at"].clone();
    assert_problem(patch(&app, &token, id, &json!({"expires_at": null})).await, 409, "CONFLICT").await;
    assert_problem(patch(&app, &token, id, &json!({"expires_in": 7200})).await, 409, "CONFLICT").await;
    assert_eq!(get(&app, &token, id).await["expires_at"], grace_end);
    let sooner = patched(&app, &token, id, &json!({"expires_in": 60})).await;
    assert_ne!(sooner["expires_at"], grace_end);
    assert_eq!(sooner["status"], "rotating");
}

#[tokio::test]
async fn every_patch_is_audited_with_what_it_changed() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = simple_key(&app, &token).await;
    let id = s(&key, "id");
    let res = app
        .http
        .patch(app.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&token)
        .header("x-request-id", "rid-patch")
        .json(&json!({"enabled": false, "rate_limit": {"limit": 5, "window": 10}, "metadata": {"secret-ish": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    patched(&app, &token, id, &json!({})).await;
    let admin = app.admin_token().await;
    let entries: Value = app.get_auth("/v1/admin/audit?target_type=api_key", &admin).await.json().await.unwrap();
    let updates: Vec<&Value> = entries.as_array().unwrap().iter().filter(|e| e["action"] == "api_key.update").collect();
    assert_eq!(updates.len(), 2, "{entries}");
    let first = updates.iter().find(|e| e["request_id"] == "rid-patch").unwrap();
    assert_eq!(first["target_id"], id);
    assert_eq!(first["ip"], "127.0.0.1");
    let d = &first["details"];
    assert_eq!((&d["enabled"], &d["narrowed"]), (&json!(false), &json!(true)), "{d}");
    assert_eq!(d["rate_limit"], json!({"limit": 5, "window": 10}));
    assert_eq!(d["metadata"], "changed", "metadata values are not copied into the audit log");
}

#[tokio::test]
async fn bad_input_is_a_400_that_names_the_field() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&ALL).await;
    let key = simple_key(&app, &token).await;
    let id = s(&key, "id");
    let cases = [
        (json!({"rate_limit": {"limit": 0, "window": 60}}), "rate_limit.limit"),
        (json!({"rate_limit": {"limit": -3, "window": 60}}), "rate_limit.limit"),
        (json!({"rate_limit": {"limit": 1_000_001, "window": 60}}), "rate_limit.limit"),
        (json!({"rate_limit": {"limit": 1e30, "window": 60}}), "rate_limit.limit"),
        (json!({"rate_limit": {"limit": 5, "window": 0}}), "rate_limit.window"),
        (json!({"rate_limit": {"limit": 5, "window": 86_401}}), "rate_limit.window"),
        (json!({"rate_limit": {"limit": 5}}), "window"),
        (json!({"rate_limit": {"limit": 5, "window": 9, "burst": 2}}), "burst"),
        (json!({"rate_limit": "fast"}), "rate_limit"),
        (json!({"credits": -1}), "credits"),
        (json!({"credits": 1_000_000_000_001_i64}), "credits"),
        (json!({"credits": 99_999_999_999_999_999_999.0}), "credits"),
        (json!({"credits": 2.5}), "credits"),
        (json!({"refill": {"amount": 0, "interval": 60}}), "refill.amount"),
        (json!({"refill": {"amount": 5, "interval": 0}}), "refill.interval"),
        (json!({"refill": {"amount": 5, "interval": 31_536_001}}), "refill.interval"),
        (json!({"credits": null, "refill": {"amount": 5, "interval": 60}}), "refill"),
        (json!({"name": null}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"enabled": null}), "enabled"),
        (json!({"enabled": "no"}), "enabled"),
        (json!({"metadata": [1]}), "metadata"),
        (json!({"allowed_cidrs": ["10.0.0.1/8"]}), "allowed_cidrs"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"expires_at": "tomorrow"}), "expires_at"),
        (json!({"expires_in": 0}), "expires_in"),
        (json!({"expires_in": 60, "expires_at": "2036-01-01T00:00:00Z"}), "expires_at, expires_in"),
        (json!({"owner": "someone-else"}), "owner"),
        (json!({"key": "tsk_live_x"}), "key"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(patch(&app, &token, id, &body).await, 400, "INVALID_REQUEST").await;
        assert!(s(&problem, "detail").contains(field), "{body} -> {problem}");
    }
    // The same rules at creation.
    for (extra, field) in [
        (json!({"rate_limit": {"limit": 5, "window": -1}}), "rate_limit.window"),
        (json!({"credits": -5}), "credits"),
        (json!({"refill": {"amount": 1, "interval": 0}}), "refill.interval"),
        (json!({"expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
    ] {
        let mut body = json!({"name": "n", "scopes": [], "environment": "live"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let problem = assert_problem(app.post_json("/v1/keys", &token, &body).await, 400, "INVALID_REQUEST").await;
        assert!(s(&problem, "detail").contains(field), "{body} -> {problem}");
    }
    // And a verification's cost.
    for cost in [json!(-1), json!(1_000_000_000_001_i64), json!(1.5), json!("3")] {
        let res = app.post_json("/v1/keys/verify", &token, &json!({"key": s(&key, "key"), "cost": cost})).await;
        let problem = assert_problem(res, 400, "INVALID_REQUEST").await;
        assert!(s(&problem, "detail").contains("cost"), "{cost} -> {problem}");
    }
    // Nothing was changed by the refused requests.
    let shown = get(&app, &token, id).await;
    assert_eq!((&shown["name"], &shown["enabled"], &shown["rate_limit"]), (&json!("ci"), &json!(true), &Value::Null));
    assert_problem(patch(&app, &token, "not-a-uuid", &json!({})).await, 400, "INVALID_REQUEST").await;
    let unknown = uuid::Uuid::now_v7().to_string();
    assert_problem(patch(&app, &token, &unknown, &json!({})).await, 404, "NOT_FOUND").await;
}

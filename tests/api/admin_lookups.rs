//! Admin look-ups (every key, users by name, a key by its plaintext) and `tessera admin` over HTTP.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login, Login},
};

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

async fn developer(app: &TestApp) -> (String, Login) {
    let login = setup_login(app, &ALL, &ALL).await;
    let body: Value = password_grant(app, &login, &login.password, None).await.json().await.unwrap();
    (body["access_token"].as_str().unwrap().to_owned(), login)
}

async fn new_key(app: &TestApp, token: &str, name: &str, environment: &str) -> Value {
    let res = app.post_json("/v1/keys", token, &json!({"name": name, "scopes": [], "environment": environment})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect()
}

/// Follows `Link: <…>; rel="next"` from `path` and returns every id seen, page by page.
async fn every_page(app: &TestApp, token: &str, path: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(p) = next.take() {
        let res = app.get_auth(&p, token).await;
        assert_eq!(res.status(), StatusCode::OK, "{p}");
        next = res.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l[1..l.find('>').unwrap()].to_owned()
        });
        pages.push(ids(&res.json().await.unwrap()));
        assert!(pages.len() < 20, "pagination does not end");
    }
    pages
}

#[tokio::test]
async fn an_admin_lists_every_key_by_owner_username_environment_and_status_page_by_page() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (ada, ada_login) = developer(&app).await;
    let (bob, bob_login) = developer(&app).await;
    let mut created = Vec::new();
    for i in 0..3 {
        created.push(new_key(&app, &ada, &format!("ada-{i}"), "live").await);
    }
    for i in 0..2 {
        created.push(new_key(&app, &bob, &format!("bob-{i}"), "test").await);
    }
    let all_ids: Vec<String> = created.iter().map(|k| k["id"].as_str().unwrap().to_owned()).collect();
    let revoked = &all_ids[1];
    let res = app.post_json(&format!("/v1/keys/{revoked}/revoke"), &ada, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Every key, oldest first, never a key or its hash.
    let listed: Value = app.get_auth("/v1/admin/keys", &admin).await.json().await.unwrap();
    assert_eq!(ids(&listed), all_ids);
    assert!(listed.as_array().unwrap().iter().all(|k| k.get("key").is_none() && k.get("key_hash").is_none()));
    assert!(listed.as_array().unwrap().iter().all(|k| k["effective_scopes"].is_array()), "{listed}");

    let by_owner: Value =
        app.get_auth(&format!("/v1/admin/keys?owner={}", ada_login.user_id), &admin).await.json().await.unwrap();
    assert_eq!(ids(&by_owner), all_ids[..3]);
    let by_name: Value =
        app.get_auth(&format!("/v1/admin/keys?username={}", bob_login.username), &admin).await.json().await.unwrap();
    assert_eq!(ids(&by_name), all_ids[3..]);
    let upper = bob_login.username.to_uppercase();
    let by_upper: Value = app.get_auth(&format!("/v1/admin/keys?username={upper}"), &admin).await.json().await.unwrap();
    assert_eq!(ids(&by_upper), all_ids[3..], "usernames are case-insensitive");
    let test_env: Value = app.get_auth("/v1/admin/keys?environment=test", &admin).await.json().await.unwrap();
    assert_eq!(ids(&test_env), all_ids[3..]);
    let only_revoked: Value = app.get_auth("/v1/admin/keys?status=revoked", &admin).await.json().await.unwrap();
    assert_eq!(ids(&only_revoked), std::slice::from_ref(revoked));
    let active: Value = app
        .get_auth(&format!("/v1/admin/keys?status=active&owner={}", ada_login.user_id), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&active), [all_ids[0].clone(), all_ids[2].clone()]);

    // Pages of two: every key exactly once, in order, filters kept across pages.
    let pages = every_page(&app, &admin, "/v1/admin/keys?limit=2").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(pages.concat(), all_ids);
    let pages = every_page(&app, &admin, &format!("/v1/admin/keys?limit=1&owner={}", ada_login.user_id)).await;
    assert_eq!(pages.concat(), all_ids[..3]);

    // Refusals.
    assert_problem(app.get_auth("/v1/admin/keys?username=nobody-at-all", &admin).await, 404, "NOT_FOUND").await;
    assert_problem(app.get_auth("/v1/admin/keys", &ada).await, 403, "INSUFFICIENT_SCOPE").await;
    for bad in
        ["limit=0", "limit=1001", "status=paused", "environment=prod", "after=xyz", "colour=red", "owner=a&username=b"]
    {
        let body =
            assert_problem(app.get_auth(&format!("/v1/admin/keys?{bad}"), &admin).await, 400, "INVALID_REQUEST").await;
        let field = bad.split('=').next().unwrap();
        assert!(body["detail"].as_str().unwrap().contains(field), "{bad}: {body}");
    }
}

#[tokio::test]
async fn users_are_found_by_username_and_listed_page_by_page() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut made = Vec::new();
    for name in ["ada.lovelace", "grace", "linus"] {
        let res = app
            .post_json(
                "/v1/admin/users",
                &admin,
                &json!({"username": name, "password": "correct horse battery", "scopes": []}),
            )
            .await;
        made.push(res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let found: Value = app.get_auth("/v1/admin/users?username=Ada.Lovelace", &admin).await.json().await.unwrap();
    assert_eq!(ids(&found), [made[0].clone()]);
    assert_eq!(found[0]["username"], "ada.lovelace");
    assert!(found[0].get("password_hash").is_none());
    let none: Value = app.get_auth("/v1/admin/users?username=nobody", &admin).await.json().await.unwrap();
    assert_eq!(none, json!([]));
    assert_eq!(every_page(&app, &admin, "/v1/admin/users?limit=2").await.concat(), made);
    // Deleted users are gone from the list.
    assert_eq!(app.delete_auth(&format!("/v1/admin/users/{}", made[1]), &admin).await.status(), StatusCode::NO_CONTENT);
    let listed: Value = app.get_auth("/v1/admin/users", &admin).await.json().await.unwrap();
    assert_eq!(ids(&listed), [made[0].clone(), made[2].clone()]);
}

#[tokio::test]
async fn a_key_is_looked_up_by_its_plaintext_without_counting_as_a_use() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (dev, _) = developer(&app).await;
    let created = new_key(&app, &dev, "leaky", "live").await;
    let key = created["key"].as_str().unwrap();
    let before_use: Value =
        app.get_auth(&format!("/v1/keys/{}", created["id"].as_str().unwrap()), &admin).await.json().await.unwrap();
    let pending = app.parts.usage.pending_verifications();

    let res = app.post_json("/v1/admin/keys/lookup", &admin, &json!({"key": key})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let found: Value = res.json().await.unwrap();
    assert_eq!(found["id"], created["id"]);
    assert_eq!(found["owner"], created["owner"]);
    assert!(found.get("key").is_none());
    assert_eq!(found["last_used_at"], before_use["last_used_at"]);
    assert_eq!(found["last_used_ip"], before_use["last_used_ip"]);
    assert_eq!(app.parts.usage.pending_verifications(), pending, "a look-up is not a verification");

    // A well-formed key that does not exist, a mistyped one, another admin-only refusal.
    let mut forged = key.to_owned();
    forged.replace_range(12..13, if &key[12..13] == "A" { "B" } else { "A" });
    for k in [forged.as_str(), "tsk_live_nope"] {
        assert_problem(app.post_json("/v1/admin/keys/lookup", &admin, &json!({"key": k})).await, 404, "NOT_FOUND")
            .await;
    }
    assert_problem(app.post_json("/v1/admin/keys/lookup", &dev, &json!({"key": key})).await, 403, "INSUFFICIENT_SCOPE")
        .await;
    assert_problem(
        app.post_json("/v1/admin/keys/lookup", &admin, &json!({"key": key, "x": 1})).await,
        400,
        "INVALID_REQUEST",
    )
    .await;
}

/// Runs `tessera admin ARGS` against `app` as the bootstrap admin (or with `secret`).
async fn admin_cli(app: &TestApp, secret: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("admin")
        .args(args)
        .env("TESSERA_URL", &app.addr)
        .env("TESSERA_CLIENT_ID", "admin")
        .env("TESSERA_CLIENT_SECRET", secret)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn tessera_admin_lists_and_revokes_keys_over_http_with_exit_codes_scripts_can_use() {
    let app = spawn_app().await;
    let (dev, login) = developer(&app).await;
    let a = new_key(&app, &dev, "first", "live").await;
    let b = new_key(&app, &dev, "second", "test").await;

    let (code, out, err) =
        admin_cli(&app, ADMIN_SECRET, &["keys", "list", "--json", "--username", &login.username]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&listed), [a["id"].as_str().unwrap(), b["id"].as_str().unwrap()]);

    let (code, table, _) = admin_cli(&app, ADMIN_SECRET, &["keys", "list"]).await;
    assert_eq!(code, 0);
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("first") && table.contains("second") && !table.contains(a["key"].as_str().unwrap()));

    let id = a["id"].as_str().unwrap();
    let (code, out, err) = admin_cli(&app, ADMIN_SECRET, &["keys", "revoke", id, "--reason", "leaked", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let revoked: Value = serde_json::from_str(&out).unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let verdict: Value = app.post_json("/v1/keys/verify", &dev, &json!({"key": a["key"]})).await.json().await.unwrap();
    assert_eq!(verdict["code"], "REVOKED");

    // Exit codes: 4 not found, 5 refused, 3 bad credentials, 6 nobody there, 2 usage.
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(admin_cli(&app, ADMIN_SECRET, &["keys", "revoke", &missing]).await.0, 4);
    assert_eq!(admin_cli(&app, ADMIN_SECRET, &["keys", "list", "--status", "paused"]).await.0, 5);
    let (code, _, err) = admin_cli(&app, "wrong-secret-0123456789", &["keys", "list"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("TESSERA_CLIENT_SECRET") && !err.contains("wrong-secret"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin", "--url", &format!("http://127.0.0.1:{port}"), "clients", "list"])
        .env("TESSERA_CLIENT_SECRET", ADMIN_SECRET)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TESSERA_URL"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin", "clients", "list"])
        .env_remove("TESSERA_CLIENT_SECRET")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // A client's secret, rotated from the command line: the new one works, the old one not.
    let (code, out, err) =
        admin_cli(&app, ADMIN_SECRET, &["clients", "rotate-secret", &login.client_id, "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert_eq!(app.token_for(&login.client_id, &login.secret, None).await.status(), StatusCode::UNAUTHORIZED);
    let form =
        [("grant_type", "password"), ("username", login.username.as_str()), ("password", login.password.as_str())];
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth(&login.client_id, Some(new_secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // audit tail: the latest entries, not the first ones.
    let (code, out, err) = admin_cli(&app, ADMIN_SECRET, &["audit", "tail", "--limit", "1", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let tail: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(tail.as_array().unwrap().len(), 1);
    assert_eq!(tail[0]["action"], "client.secret_rotate", "{tail}");
    // A TESSERA_URL that is no URL is a setting to fix (2), not an outage (6).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["admin", "--url", "not-a-url", "clients", "list"])
        .env("TESSERA_CLIENT_SECRET", ADMIN_SECRET)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The other resources answer too.
    for args in [
        &["clients", "list"][..],
        &["signing-keys", "list"],
        &["anomalies", "list"],
        &["audit", "tail"],
        &["users", "find", &login.username],
    ] {
        let (code, out, err) = admin_cli(&app, ADMIN_SECRET, args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.is_empty());
    }
}

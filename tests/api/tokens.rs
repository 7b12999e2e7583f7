//! Users, the password grant, rotating refresh tokens with reuse detection, revocation and
//! introspection.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{helpers::*, signing::parts};

pub struct Login {
    pub client_id: String,
    pub secret: String,
    pub user_id: String,
    pub username: String,
    pub password: String,
}

/// A user with `scopes` and a password/refresh client allowed `client_scopes`.
pub async fn setup_login(app: &TestApp, scopes: &[&str], client_scopes: &[&str]) -> Login {
    let admin = app.admin_token().await;
    let username = format!("user{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let password = "correct horse battery".to_owned();
    let res = app
        .post_json("/v1/admin/users", &admin, &json!({"username": username, "password": password, "scopes": scopes}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let user: Value = res.json().await.unwrap();
    assert_eq!(user["username"], username.as_str());
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let (client_id, secret) = app.create_client(&["password", "refresh_token"], client_scopes).await;
    Login { client_id, secret, user_id: user["id"].as_str().unwrap().into(), username, password }
}

pub async fn password_grant(app: &TestApp, l: &Login, password: &str, scope: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "password"), ("username", l.username.as_str()), ("password", password)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    app.http.post(app.url("/oauth/token")).basic_auth(&l.client_id, Some(&l.secret)).form(&form).send().await.unwrap()
}

pub async fn refresh(app: &TestApp, l: &Login, token: &str, scope: Option<&str>) -> reqwest::Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    app.http.post(app.url("/oauth/token")).basic_auth(&l.client_id, Some(&l.secret)).form(&form).send().await.unwrap()
}

async fn introspect(app: &TestApp, token: &str) -> Value {
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    app.http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_password_grant_returns_an_access_token_for_the_user_and_a_refresh_token() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["keys:read", "keys:write"], &["keys:read", "keys:write", "other"]).await;
    let res = password_grant(&app, &l, &l.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "keys:read keys:write", "user ∩ client scopes");
    let rt = body["refresh_token"].as_str().unwrap();
    assert!(rt.starts_with("tsr_") && rt.len() >= 4 + 43);
    let (_, claims) = parts(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], l.user_id.as_str());
    assert_eq!(claims["client_id"], l.client_id.as_str());
    assert!(claims["sid"].is_string(), "access tokens carry their family id");
    // The refresh token is stored only as a keyed hash.
    let mut db = app.db().await;
    let dump: Vec<String> =
        sqlx::query_scalar("SELECT encode(token_hash, 'escape') FROM refresh_tokens").fetch_all(&mut db).await.unwrap();
    assert!(dump.iter().all(|d| !d.contains(&rt[4..])));
    // Nowhere in the database: not the refresh token, not the password, not the client secret.
    let pg_dump = app.pg_dump();
    assert!(pg_dump.contains(&l.user_id), "pg_dump holds the user");
    for secret in [&rt[4..], l.password.as_str(), l.secret.as_str()] {
        assert!(!pg_dump.contains(secret) && !pg_dump.contains(&hex::encode(secret.as_bytes())));
    }
    // A wider scope than allowed is refused.
    assert_oauth_error(password_grant(&app, &l, &l.password, Some("other")).await, 400, "invalid_scope").await;
}

#[tokio::test]
async fn rotation_returns_a_new_pair_and_spends_the_old_token() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let first: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap();
    let res = refresh(&app, &l, rt1, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(
        parts(first["access_token"].as_str().unwrap()).1["sid"],
        parts(second["access_token"].as_str().unwrap()).1["sid"]
    );
    assert_eq!(introspect(&app, rt1).await, json!({"active": false}));
    let active = introspect(&app, rt2).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_type"], "refresh_token");
    assert_eq!(active["sub"], l.user_id.as_str());
    // Every field the contract lists for an active token.
    for field in ["scope", "client_id", "sub", "exp", "iat", "jti", "aud", "iss", "token_type"] {
        assert!(!active[field].is_null(), "{field} missing: {active}");
    }
    let sid = parts(second["access_token"].as_str().unwrap()).1["sid"].as_str().unwrap().to_owned();
    assert_eq!(active["jti"], format!("{sid}.1"), "family and generation");
    assert_eq!(active["aud"], active["iss"], "a refresh token is for this issuer only");
    assert_eq!(active["client_id"], l.client_id.as_str());
}

#[tokio::test]
async fn replaying_a_spent_token_revokes_the_family_and_its_access_tokens() {
    // Strict: with a grace, this replay would be a retry (see refresh_retry.rs).
    let app = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "0").spawn().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let first: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let second: Value = refresh(&app, &l, &rt1, None).await.json().await.unwrap();
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    let at2 = second["access_token"].as_str().unwrap().to_owned();
    assert_eq!(introspect(&app, &at2).await["active"], true);

    // The replay: invalid_grant, and the newest successor dies with the family.
    assert_oauth_error(refresh(&app, &l, &rt1, None).await, 400, "invalid_grant").await;
    assert_oauth_error(refresh(&app, &l, &rt2, None).await, 400, "invalid_grant").await;
    assert_eq!(introspect(&app, &at2).await, json!({"active": false}));
    assert_eq!(introspect(&app, first["access_token"].as_str().unwrap()).await, json!({"active": false}));

    // An anomaly record and a revocation event were written.
    let mut db = app.db().await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE kind = 'REFRESH_TOKEN_REUSE'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let sid = parts(&at2).1["sid"].as_str().unwrap().to_owned();
    let ev: i64 =
        sqlx::query_scalar("SELECT count(*) FROM revocation_events WHERE kind = 'refresh_family' AND subject_id = $1")
            .bind(&sid)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(ev, 1);
    // A fresh login still works.
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn fifty_concurrent_refreshes_over_two_instances_give_exactly_one_success() {
    // Strict: with a grace, every one of them gets the successor (see refresh_retry.rs).
    let a = TestAppBuilder::new().set("TESSERA_REFRESH_RETRY_GRACE", "0").spawn().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    for round in 0..5 {
        let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
        let rt = login["refresh_token"].as_str().unwrap().to_owned();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let app_url = if i % 2 == 0 { a.addr.clone() } else { b.addr.clone() };
            let (id, secret, rt) = (l.client_id.clone(), l.secret.clone(), rt.clone());
            let http = a.http.clone();
            tasks.push(tokio::spawn(async move {
                let res = http
                    .post(format!("{app_url}/oauth/token"))
                    .basic_auth(id, Some(secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
                    .send()
                    .await
                    .unwrap();
                let status = res.status();
                (status, res.json::<Value>().await.unwrap())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (StatusCode::OK, body) => winners.push(body),
                (StatusCode::BAD_REQUEST, body) => assert_eq!(body["error"], "invalid_grant", "round {round}"),
                (s, body) => panic!("round {round}: unexpected status {s}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} successes", winners.len());
        // The losers presented a token already spent: that is reuse (the contract's rule, and the
        // BCP's: the server cannot tell a racing client from a thief), so the family is revoked and
        // the winner's new refresh token is refused too. Deliberately strict.
        let next = winners[0]["refresh_token"].as_str().unwrap();
        let res = refresh(&a, &l, next, None).await;
        assert_oauth_error(res, 400, "invalid_grant").await;
    }
}

#[tokio::test]
async fn idle_and_absolute_lifetimes_are_enforced() {
    let app = TestAppBuilder::new()
        .set("TESSERA_REFRESH_TOKEN_IDLE_TTL", "100")
        .set("TESSERA_REFRESH_TOKEN_ABSOLUTE_TTL", "250")
        .spawn()
        .await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    // Idle: unused for longer than 100 s.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(101));
    assert_oauth_error(refresh(&app, &l, login["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
        .await;

    // Absolute: rotating every 90 s keeps it alive only until 250 s after login.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let mut rt = login["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        app.clock.advance(Duration::from_secs(90));
        let res = refresh(&app, &l, &rt, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        rt = res.json::<Value>().await.unwrap()["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.advance(Duration::from_secs(90));
    assert_oauth_error(refresh(&app, &l, &rt, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a", "b", "c"], &["a", "b", "c"]).await;
    let login: Value = password_grant(&app, &l, &l.password, Some("a b")).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    // Widening is refused and does not spend the token.
    assert_oauth_error(refresh(&app, &l, rt, Some("a c")).await, 400, "invalid_scope").await;
    let narrowed: Value = refresh(&app, &l, rt, Some("a")).await.json().await.unwrap();
    assert_eq!(narrowed["scope"], "a");
    // The successor keeps the original scope.
    let again: Value = refresh(&app, &l, narrowed["refresh_token"].as_str().unwrap(), None).await.json().await.unwrap();
    assert_eq!(again["scope"], "a b");
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    let (other, other_secret) = app.create_client(&["password", "refresh_token"], &["a"]).await;
    let thief = Login {
        client_id: other,
        secret: other_secret,
        user_id: String::new(),
        username: String::new(),
        password: String::new(),
    };
    assert_oauth_error(refresh(&app, &thief, rt, None).await, 400, "invalid_grant").await;
    // The rightful client can still use it.
    assert_eq!(refresh(&app, &l, rt, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn wrong_password_unknown_user_and_locked_account_answer_the_same() {
    let app = TestAppBuilder::new().set("TESSERA_LOGIN_MAX_FAILURES", "3").spawn().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let wrong = password_grant(&app, &l, "wrong password", None).await;
    let ghost = Login { username: "nobody-here".into(), ..setup_login(&app, &["a"], &["a"]).await };
    let unknown = password_grant(&app, &ghost, "whatever pw", None).await;
    let wrong_body = assert_oauth_error(wrong, 400, "invalid_grant").await;
    let unknown_body = assert_oauth_error(unknown, 400, "invalid_grant").await;
    assert_eq!(wrong_body, unknown_body);
    // Two more failures lock the account: even the right password is refused, identically.
    for _ in 0..2 {
        password_grant(&app, &l, "wrong password", None).await;
    }
    let locked = assert_oauth_error(password_grant(&app, &l, &l.password, None).await, 400, "invalid_grant").await;
    assert_eq!(locked, wrong_body);
    // After the lockout the right password works again.
    app.clock.advance(Duration::from_secs(901));
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_family_and_an_access_token_its_jti() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let (rt, at) = (login["refresh_token"].as_str().unwrap(), login["access_token"].as_str().unwrap());
    let revoke = |token: String, id: String, secret: String| {
        let http = app.http.clone();
        let url = app.url("/oauth/revoke");
        async move { http.post(url).basic_auth(id, Some(secret)).form(&[("token", token.as_str())]).send().await.unwrap() }
    };
    // Another client cannot revoke it (200, but nothing happens).
    let (other, other_secret) = app.create_client(&["client_credentials"], &[]).await;
    let res = revoke(rt.to_owned(), other.clone(), other_secret.clone()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(introspect(&app, rt).await["active"], true);
    // Unknown tokens: still 200.
    assert_eq!(revoke("garbage".into(), other, other_secret).await.status(), StatusCode::OK);

    // The owner revokes the refresh token: family and its access tokens die.
    assert_eq!(revoke(rt.to_owned(), l.client_id.clone(), l.secret.clone()).await.status(), StatusCode::OK);
    assert_eq!(introspect(&app, rt).await, json!({"active": false}));
    assert_eq!(introspect(&app, at).await, json!({"active": false}));
    assert_oauth_error(refresh(&app, &l, rt, None).await, 400, "invalid_grant").await;

    // An access token alone: its jti is revoked until it expires.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let at = login["access_token"].as_str().unwrap();
    assert_eq!(revoke(at.to_owned(), l.client_id.clone(), l.secret.clone()).await.status(), StatusCode::OK);
    assert_eq!(introspect(&app, at).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["refresh_token"].as_str().unwrap()).await["active"], true, "only the jti");
    // Unauthenticated revocation is refused.
    let res = app.http.post(app.url("/oauth/revoke")).form(&[("token", at)]).send().await.unwrap();
    assert_oauth_error(res, 401, "invalid_client").await;
}

#[tokio::test]
async fn introspection_needs_the_introspect_scope_and_reports_active_tokens_fully() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (id, secret) = app.create_client(&["client_credentials"], &["x"]).await;
    let res = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 403, "insufficient_scope").await;
    let body = introspect(&app, &admin).await;
    assert_eq!(body["active"], true);
    for k in ["scope", "client_id", "sub", "exp", "iat", "jti", "aud", "iss", "token_type"] {
        assert!(!body[k].is_null(), "{k} missing: {body}");
    }
    assert_eq!(body["client_id"], "admin");
    assert_eq!(introspect(&app, "not-a-token").await, json!({"active": false}));
    assert_eq!(introspect(&app, "tsr_00000000000000000000000000000000000000000000").await, json!({"active": false}));
    // Expired: the clock moves past exp.
    app.clock.advance(Duration::from_secs(601));
    assert_eq!(introspect(&app, &admin).await, json!({"active": false}));
}

#[tokio::test]
async fn bearer_checks_refuse_revoked_jtis_and_families_across_instances() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let l = setup_login(&a, &["keys:read"], &["keys:read"]).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let at = login["access_token"].as_str().unwrap();
    assert_eq!(b.get_auth("/v1/admin/clients", at).await.status(), StatusCode::FORBIDDEN, "valid but not admin");
    a.http
        .post(a.url("/oauth/revoke"))
        .basic_auth(&l.client_id, Some(&l.secret))
        .form(&[("token", login["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(a.get_auth("/v1/admin/clients", at).await.status(), StatusCode::UNAUTHORIZED);
    let mut refused = false;
    for _ in 0..30 {
        if b.get_auth("/v1/admin/clients", at).await.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "instance b still accepts a token of a revoked family after 3 s");
}

#[tokio::test]
async fn users_are_managed_by_admins_and_deleting_one_revokes_their_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let got: Value = app.get_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await.json().await.unwrap();
    assert_eq!(got["username"], l.username.as_str());
    assert!(got["created_at"].is_string());
    let dup = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": l.username.to_uppercase(), "password": "another password"}),
        )
        .await;
    assert_problem(dup, 409, "CONFLICT").await;
    for bad in [
        json!({"username": "x", "password": "short"}),
        json!({"username": "", "password": "long enough pw"}),
        json!({"username": "x y", "password": "long enough pw"}),
        json!({"username": "x", "password": "long enough pw", "scopes": ["no spaces allowed"]}),
    ] {
        assert_problem(app.post_json("/v1/admin/users", &admin, &bad).await, 400, "INVALID_REQUEST").await;
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1::uuid")
        .bind(&l.user_id)
        .fetch_one(&mut app.db().await)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(&l.password));

    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    assert_eq!(
        app.delete_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(introspect(&app, login["refresh_token"].as_str().unwrap()).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["access_token"].as_str().unwrap()).await, json!({"active": false}));
    assert_problem(app.get_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await, 404, "NOT_FOUND").await;
    assert_problem(app.get_auth("/v1/admin/users/not-a-uuid", &admin).await, 400, "INVALID_REQUEST").await;
    assert_oauth_error(password_grant(&app, &l, &l.password, None).await, 400, "invalid_grant").await;
}

#[tokio::test]
async fn a_clients_own_refresh_token_ttl_replaces_the_idle_default() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/admin/users",
            &admin,
            &json!({"username": "ttl-user", "password": "correct horse battery", "scopes": ["a"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "short", "grant_types": ["password", "refresh_token"], "scopes": ["a"], "refresh_token_ttl": 120}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let c: Value = res.json().await.unwrap();
    let l = Login {
        client_id: c["client_id"].as_str().unwrap().into(),
        secret: c["client_secret"].as_str().unwrap().into(),
        user_id: String::new(),
        username: "ttl-user".into(),
        password: "correct horse battery".into(),
    };
    // Within 120 s of its issue a refresh token rotates; unused for longer, it is dead, although the
    // service-wide idle lifetime (14 days) is far from over.
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    app.clock.advance(Duration::from_secs(110));
    let res = refresh(&app, &l, login["refresh_token"].as_str().unwrap(), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    app.clock.advance(Duration::from_secs(121));
    assert_oauth_error(refresh(&app, &l, rotated["refresh_token"].as_str().unwrap(), None).await, 400, "invalid_grant")
        .await;
}

#[tokio::test]
async fn deleting_a_client_ends_its_refresh_tokens() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let rt = login["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&app, rt).await["active"], true);
    let res = app.delete_auth(&format!("/v1/admin/clients/{}", l.client_id), &admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(introspect(&app, rt).await, json!({"active": false}));
    assert_eq!(introspect(&app, login["access_token"].as_str().unwrap()).await, json!({"active": false}));
    let res = refresh(&app, &l, rt, None).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let mut db = app.db().await;
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM refresh_families WHERE client_id = $1 AND revoked_at IS NULL")
            .bind(&l.client_id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(live, 0);
}

#[tokio::test]
async fn a_client_without_the_refresh_token_grant_gets_no_refresh_token_and_cannot_refresh() {
    let app = spawn_app().await;
    let with_refresh = setup_login(&app, &["a"], &["a"]).await;
    let first = password_grant(&app, &with_refresh, &with_refresh.password, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let refresh_token = first["refresh_token"].as_str().expect("a refresh token for a refresh_token client").to_owned();

    // The same user through a client registered for the password grant only.
    let (client_id, secret) = app.create_client(&["password"], &["a"]).await;
    let password_only = Login { client_id, secret, ..with_refresh };
    let res = password_grant(&app, &password_only, &password_only.password, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert!(body["access_token"].is_string());
    assert!(body.get("refresh_token").is_none(), "{body}");
    // It may not use the refresh_token grant, whatever token it presents.
    let res = refresh(&app, &password_only, &refresh_token, None).await;
    assert_oauth_error(res, 400, "unauthorized_client").await;
}

/// The password grant is legacy (RFC 9700 §2.4): its use is logged as a warning naming the client.
#[tokio::test]
async fn a_password_grant_is_logged_as_legacy_naming_its_client() {
    let app = spawn_app().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    assert_eq!(password_grant(&app, &l, &l.password, None).await.status(), StatusCode::OK);
    let logs = captured_logs();
    assert!(
        logs.lines().any(|line| line.contains("WARN") && line.contains("legacy") && line.contains(&l.client_id)),
        "no legacy warning for client {}",
        l.client_id
    );
}

use base64::{engine::general_purpose::STANDARD, Engine};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test]
async fn readyz_reports_postgres_and_redis() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["postgres"], "up");
    assert_eq!(body["redis"], "up");

    let single = spawn_app().await;
    let body: Value = single.http.get(single.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["redis"], "in_process");
}

#[tokio::test]
async fn readyz_is_503_when_postgres_is_unreachable() {
    let app = spawn_app().await;
    // Cut every connection of this test's database and forbid new ones.
    let mut admin = admin_connection().await;
    sqlx::query(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", app.db_name))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&app.db_name)
        .execute(&mut admin)
        .await
        .unwrap();
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["postgres"], "down");
    // Liveness is unaffected.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    // The log says so once, naming the variable and the database.
    let said = |what: &'static str| {
        let db = app.db_name.clone();
        move || {
            let db = db.clone();
            async move {
                captured_logs()
                    .lines()
                    .any(|l| l.contains("TESSERA_DATABASE_URL") && l.contains(&db) && l.contains(what))
            }
        }
    };
    eventually(std::time::Duration::from_secs(10), "a warning naming the database", said("does not answer")).await;
    sqlx::query(&format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", app.db_name))
        .execute(&mut admin)
        .await
        .unwrap();
    eventually(std::time::Duration::from_secs(10), "a line when it is back", said("answers again")).await;
}

#[tokio::test]
async fn malformed_json_unknown_fields_wrong_types_and_content_type_are_problems() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let url = app.url("/v1/admin/clients");

    let res = app
        .http
        .post(&url)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "INVALID_REQUEST").await;

    let res = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "x", "grant_types": ["client_credentials"], "scopes": [], "surprise": 1}),
        )
        .await;
    let body = assert_problem(res, 400, "INVALID_REQUEST").await;
    assert!(body["detail"].as_str().unwrap().contains("surprise"), "{body}");

    let res = app.post_json("/v1/admin/clients", &admin, &json!({"name": 5, "grant_types": [], "scopes": []})).await;
    assert_problem(res, 400, "INVALID_REQUEST").await;

    let res =
        app.http.post(&url).bearer_auth(&admin).header("content-type", "text/plain").body("{}").send().await.unwrap();
    assert_problem(res, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn a_70_kib_body_is_413_in_the_contract_format() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let big = json!({"name": "x".repeat(70 * 1024), "grant_types": ["client_credentials"], "scopes": []});
    let res = app.post_json("/v1/admin/clients", &admin, &big).await;
    assert_problem(res, 413, "PAYLOAD_TOO_LARGE").await;

    let form = [("grant_type", "client_credentials"), ("scope", &"a".repeat(70 * 1024))];
    let res = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_oauth_error(res, 413, "invalid_request").await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems_not_plain_text() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/nope")).send().await.unwrap();
    assert_problem(res, 404, "NOT_FOUND").await;
    let res = app.http.get(app.url("/v1/nope")).send().await.unwrap();
    assert_problem(res, 404, "NOT_FOUND").await;
    let res = app.http.delete(app.url("/healthz")).send().await.unwrap();
    assert_problem(res, 405, "METHOD_NOT_ALLOWED").await;
    let res = app.http.get(app.url("/oauth/token")).send().await.unwrap();
    assert_oauth_error(res, 405, "invalid_request").await;
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(res.headers().get("x-request-id").is_some());
    let res = app.http.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn requests_are_counted_under_their_route_template_and_strangers_under_one_label() {
    let app = spawn_app().await;
    let token = app.token_with_scopes(&["keys:read"]).await;
    let count = |text: &str, route: &str, status: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("http_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let scrape = || async { app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let before = scrape().await;
    // A parameterised route, the Swagger UI's assets and a path nothing serves.
    let res = app.get_auth(&format!("/v1/keys/{}", uuid::Uuid::now_v7()), &token).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app.http.get(app.url("/docs/swagger-ui.css")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.http.get(app.url(&format!("/no/such/{}", uuid::Uuid::now_v7()))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let after = scrape().await;
    let moved = |route: &str, status: &str| count(&after, route, status) - count(&before, route, status);
    assert!(moved("/v1/keys/{id}", "404") >= 1.0, "{after}");
    assert!(moved("/docs/{*rest}", "200") >= 1.0, "{after}");
    assert!(moved("unmatched", "404") >= 1.0, "{after}");
    assert!(!after.contains("/no/such/"), "a stranger's path must not become a label");
}

#[tokio::test]
async fn metrics_count_a_request_we_made() {
    let app = spawn_app().await;
    let read = |text: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("http_requests_total{") && l.contains("route=\"/readyz\"") && l.contains("status=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let before = read(&app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap());
    app.http.get(app.url("/readyz")).send().await.unwrap();
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(read(&text) >= before + 1.0, "before {before}, after {}", read(&text));
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("db_pool_connections{state=\"idle\"}"));

    // A method a client makes up is answered in the contract's format and counted as OTHER, so
    // requests cannot mint label sets without bound.
    let brew = reqwest::Method::from_bytes(b"BREWCOFFEE").unwrap();
    let res = app.http.request(brew, app.url("/readyz")).send().await.unwrap();
    assert!(res.status().is_client_error(), "{}", res.status());
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("BREWCOFFEE"));
    assert!(text.lines().any(|l| l.starts_with("http_requests_total{") && l.contains("method=\"OTHER\"")), "{text}");
}

#[test]
fn bad_configuration_stops_the_binary_with_one_line_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("serve")
        .env("TESSERA_ACCESS_TOKEN_TTL", "soon")
        .env("TESSERA_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/never_created_here")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("TESSERA_ACCESS_TOKEN_TTL"), "{stderr}");
}

#[tokio::test]
async fn the_database_is_created_when_missing_and_migrated() {
    let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
    let mut env = TestAppBuilder::new().env;
    env.insert("TESSERA_DATABASE_URL".into(), format!("{}/{name}", server_url()));
    let config = tessera::Config::from_map(&env).unwrap();
    let app = tessera::Application::build(config).await.expect("builds against a missing database");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys").fetch_one(&app.state().db).await.unwrap();
    assert_eq!(n, 2, "an active and a next key");
    app.state().db.close().await;
    drop(app);
    let mut admin = admin_connection().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
}

#[tokio::test]
async fn secrets_sent_to_the_service_never_reach_the_logs() {
    let app = spawn_app().await;
    let marker = format!("leak-{}", uuid::Uuid::new_v4().simple());
    // In a form body, an Authorization header, and a JSON body.
    let _ = app
        .http
        .post(app.url("/oauth/token"))
        .basic_auth("admin", Some(&marker))
        .form(&[("grant_type", "password"), ("username", "u"), ("password", marker.as_str())])
        .send()
        .await
        .unwrap();
    let _ = app.http.get(app.url("/v1/admin/clients")).bearer_auth(&marker).send().await.unwrap();
    let admin = app.admin_token().await;
    let created: Value = app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "n", "grant_types": ["client_credentials"], "scopes": []}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let _ = app.token_for(created["client_id"].as_str().unwrap(), &secret, None).await;
    let logs = captured_logs();
    assert!(logs.contains("request"), "logs were captured");
    assert!(!logs.contains(&marker), "a secret reached the logs");
    assert!(!logs.contains(&secret), "a client secret reached the logs");
    assert!(!logs.contains(ADMIN_SECRET), "the admin secret reached the logs");
    assert!(!logs.contains(&admin), "an access token reached the logs");
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let app = spawn_app().await;
    // Twenty Argon2 verifications (token requests with a wrong secret) queue behind the
    // bounded hashing pool, so most are still in flight when the stop comes.
    let mut in_flight = Vec::new();
    for _ in 0..20 {
        let http = app.http.clone();
        let url = app.url("/oauth/token");
        in_flight.push(tokio::spawn(async move {
            http.post(url)
                .basic_auth("admin", Some("wrong-secret"))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    app.stop().await;
    for req in in_flight {
        let res = req.await.unwrap().expect("the request was answered, not cut");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn the_purge_job_removes_expired_refresh_tokens_and_revoked_jtis() {
    let app = spawn_app().await;
    let mut db = app.db().await;
    let now = app.clock.now();
    let long_ago = now - time::Duration::days(10);
    let family = uuid::Uuid::now_v7();
    // One transaction: the background purge must not remove the family between the two inserts.
    let mut tx = sqlx::Connection::begin(&mut db).await.unwrap();
    sqlx::query("INSERT INTO refresh_families (id, client_id, user_id, created_at, absolute_expires_at) VALUES ($1, 'c', $1, $2, $2)")
        .bind(family)
        .bind(long_ago)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, generation, scopes, issued_at, expires_at) VALUES ('\\x00', $1, 0, '{}', $2, $2)")
        .bind(family)
        .bind(long_ago)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("INSERT INTO revoked_jtis (jti, expires_at, revoked_at) VALUES ($1, $2, $2)")
        .bind(uuid::Uuid::now_v7())
        .bind(long_ago)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // (The background job may get there first; either way nothing expired is left.)
    app.parts.housekeeping.purge_expired().await.unwrap();
    for table in ["refresh_tokens", "refresh_families", "revoked_jtis"] {
        let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&mut db).await.unwrap();
        assert_eq!(left, 0, "{table}");
    }
}

/// Postgres text cannot hold U+0000. Wherever such a character can arrive — form, Basic header, path,
/// query, JSON — the answer is a 4xx in the contract's format, never a 500.
#[tokio::test]
async fn nul_characters_in_any_input_are_4xx_never_500() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let l = crate::tokens::setup_login(&app, &["keys:read", "keys:write"], &["keys:read", "keys:write"]).await;
    let login: Value = crate::tokens::password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let user = login["access_token"].as_str().unwrap().to_owned();
    let token_url = app.url("/oauth/token");
    let mut answers: Vec<(String, u16, Value)> = Vec::new();
    let mut note = |what: &str, status: StatusCode, body: Value| answers.push((what.to_owned(), status.as_u16(), body));

    // Client authentication: an id holding NUL is an unknown client (401 invalid_client, as for any other).
    let res = app.token_for("ad\0min", "secret", None).await;
    note("basic client id", res.status(), res.json().await.unwrap());
    let res = app
        .http
        .post(&token_url)
        .form(&[("grant_type", "client_credentials"), ("client_id", "a\0"), ("client_secret", "x")])
        .send()
        .await
        .unwrap();
    note("post client id", res.status(), res.json().await.unwrap());
    // Password grant: a username holding NUL is an unknown user.
    let res = app
        .http
        .post(&token_url)
        .basic_auth(&l.client_id, Some(&l.secret))
        .form(&[("grant_type", "password"), ("username", "us\0er"), ("password", "x")])
        .send()
        .await
        .unwrap();
    note("username", res.status(), res.json().await.unwrap());
    for path in [
        "/v1/admin/clients/a%00b",
        "/v1/admin/audit?actor=a%00b",
        "/v1/admin/audit?target_id=a%00b",
        "/v1/admin/audit?target_type=a%00b",
        "/v1/admin/anomalies?kind=a%00b",
    ] {
        let res = app.get_auth(path, &admin).await;
        note(path, res.status(), res.json().await.unwrap());
    }
    let res = app.delete_auth("/v1/admin/clients/a%00b", &admin).await;
    note("delete client", res.status(), res.json().await.unwrap());
    let res = app.post_json("/v1/admin/signing-keys/a%00b/revoke", &admin, &json!({})).await;
    note("revoke signing key", res.status(), res.json().await.unwrap());
    for (what, path, token, body) in [
        ("client name", "/v1/admin/clients", &admin, json!({"name": "a\u{0}b", "grant_types": ["client_credentials"]})),
        ("client audience", "/v1/admin/clients", &admin, json!({"name": "n", "audience": "a\u{0}b"})),
        ("username", "/v1/admin/users", &admin, json!({"username": "a\u{0}b", "password": "long enough pw"})),
        ("key name", "/v1/keys", &user, json!({"name": "a\u{0}b", "scopes": [], "environment": "live"})),
        (
            "key metadata",
            "/v1/keys",
            &user,
            json!({"name": "n", "scopes": [], "environment": "live", "metadata": {"k": "a\u{0}b"}}),
        ),
        (
            "key metadata name",
            "/v1/keys",
            &user,
            json!({"name": "n", "scopes": [], "environment": "live", "metadata": {"a\u{0}": 1}}),
        ),
    ] {
        let res = app.post_json(path, token, &body).await;
        note(what, res.status(), res.json().await.unwrap());
    }
    for (what, status, body) in &answers {
        assert!((400..500).contains(status), "{what}: {status} {body}");
        assert!(body.get("code").is_some() || body.get("error").is_some(), "{what}: contract format: {body}");
    }
    let find = |what: &str| answers.iter().find(|a| a.0 == what).unwrap();
    assert_eq!(find("basic client id").1, 401);
    assert_eq!(find("basic client id").2["error"], "invalid_client");
    assert_eq!(find("post client id").2["error"], "invalid_client");
    assert_eq!(find("username").2["error"], "invalid_grant");
}

/// What a start changes in the database: clients (the bootstrap admin's secret hash), signing keys,
/// the audit log and the applied migrations.
async fn start_footprint(app: &TestApp) -> String {
    let mut db = app.db().await;
    sqlx::query_scalar(
        "SELECT concat_ws('|',
            (SELECT string_agg(client_id || ':' || coalesce(secret_hash, '') || ':' || coalesce(disabled_at::text, ''), ',' ORDER BY client_id) FROM clients),
            (SELECT string_agg(kid || ':' || state || ':' || md5(private_key_enc), ',' ORDER BY kid) FROM signing_keys),
            (SELECT count(*)::text FROM audit_log),
            (SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations))",
    )
    .fetch_one(&mut db)
    .await
    .unwrap()
}

/// Started with another master key than the one its signing keys were sealed with, Tessera stops
/// before it writes anything (before, it had already rewritten the bootstrap admin's secret), and
/// says which key it used, which database, and the two ways out.
#[tokio::test]
async fn a_wrong_master_key_stops_the_start_before_anything_in_the_database_changes() {
    let app = spawn_app().await;
    let before = start_footprint(&app).await;
    let dir = std::env::temp_dir().join(format!("tessera-mk-{}", uuid::Uuid::new_v4().simple()));
    let key_file = dir.join("master.key");
    for (var, value) in [("TESSERA_MASTER_KEY", Some(STANDARD.encode([7u8; 32]))), ("TESSERA_MASTER_KEY_FILE", None)] {
        let mut env = app.env.clone();
        env.insert("TESSERA_BOOTSTRAP_ADMIN_SECRET".into(), "a-different-admin-secret".into());
        env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
        match value.clone() {
            Some(v) => {
                env.insert(var.into(), v);
            }
            None => {
                env.remove("TESSERA_MASTER_KEY");
                env.insert(var.into(), key_file.display().to_string());
            }
        }
        let config = tessera::Config::from_map(&env).unwrap();
        let err = match tessera::Application::build(config).await {
            Ok(_) => panic!("started with the wrong master key ({var})"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(var), "{err}");
        assert!(err.contains(&app.db_name) && err.contains("127.0.0.1:5432"), "names the database: {err}");
        assert!(err.contains("Nothing was changed") && err.contains("new one"), "says the ways out: {err}");
        if value.is_none() {
            assert!(err.contains(&key_file.display().to_string()), "names the key file: {err}");
        }
        assert_eq!(start_footprint(&app).await, before, "{var}: the failed start changed the database");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Connection failures at start name the variable, the server and the likely fix.
#[tokio::test]
async fn an_unreachable_postgres_is_named_with_its_variable_host_and_fix() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut env = TestAppBuilder::new().env;
    env.insert("TESSERA_DATABASE_URL".into(), format!("postgres://postgres:hunter2@127.0.0.1:{port}/tessera_nowhere"));
    let config = tessera::Config::from_map(&env).unwrap();
    let err = match tessera::Application::build(config).await {
        Ok(_) => panic!("started without Postgres"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("TESSERA_DATABASE_URL"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("tessera_nowhere"), "{err}");
    assert!(err.contains("is Postgres running"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// A Redis that does not answer is a warning in the log at start, naming the variable.
#[tokio::test]
async fn an_unreachable_redis_is_a_warning_naming_its_variable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let app = TestAppBuilder::new().set("TESSERA_REDIS_URL", &url).spawn().await;
    let shown = format!("redis://:[redacted]@127.0.0.1:{port}");
    eventually(std::time::Duration::from_secs(10), "a warning about Redis", || async {
        captured_logs().lines().any(|l| l.contains("TESSERA_REDIS_URL") && l.contains("WARN") && l.contains(&shown))
    })
    .await;
    assert!(!captured_logs().contains("hunter2"));
    drop(app);
}

/// `tessera openapi | head -1` ends quietly with status 0 (it panicked on the closed pipe).
#[test]
fn the_openapi_command_survives_a_reader_that_stops_early() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; '{}' openapi | head -c 1 >/dev/null", env!("CARGO_BIN_EXE_tessera")))
        .output()
        .unwrap();
    assert!(out.status.success(), "status {:?}, stderr: {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// Each option names its variable once in `--help` (it said `[env: …] [env: …]`).
#[test]
fn help_names_each_variable_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera")).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[env: TESSERA_DATABASE_URL]"), "{help}");
    assert!(help.lines().all(|l| l.matches("[env:").count() <= 1), "{help}");
}

/// When the test suite cannot reach Postgres, the failure says so in plain words.
#[tokio::test]
#[should_panic(expected = "nothing answers at the Postgres address")]
async fn the_suite_explains_a_postgres_it_cannot_reach() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
}

//! The binary and the process: configuration errors, the database made and migrated, the master
//! key, the CLI, secrets kept out of the logs, the purge job.

use base64::{engine::general_purpose::STANDARD, Engine};
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

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
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys").fetch_one(&app.parts().db).await.unwrap();
    assert_eq!(n, 2, "an active and a next key");
    app.parts().db.close().await;
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

//! Health and readiness, and how an unreachable Postgres or Redis is reported.

use reqwest::StatusCode;
use serde_json::Value;

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

/// When the test suite cannot reach Postgres, the failure says so in plain words.
#[tokio::test]
#[should_panic(expected = "nothing answers at the Postgres address")]
async fn the_suite_explains_a_postgres_it_cannot_reach() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres")).await;
}

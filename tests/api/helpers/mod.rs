//! Test harness: each test gets its own database (cloned from a pre-migrated template), its own
//! Redis prefix, and a real Tessera instance on 127.0.0.1:0. Databases are dropped afterwards.
//! Postgres: [`postgres`]; waiting for a condition: [`eventually`].

mod eventually;
mod postgres;

pub use eventually::*;
pub use postgres::*;

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD, Engine};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgConnection;
use tessera::{app::Parts, clock::Clock, Application, Config};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

pub fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Everything the tests log, so a test can look for leaked secrets.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.get_or_init(Default::default).lock().unwrap()).into_owned()
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.get_or_init(Default::default).lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        use tracing_subscriber::{fmt, prelude::*, EnvFilter};
        let filter = EnvFilter::new("debug,hyper=info,h2=info,reqwest=info,rustls=info,sqlx=info");
        let _ =
            tracing_subscriber::registry().with(filter).with(fmt::layer().json().with_writer(|| LogWriter)).try_init();
    });
}

/// Builder for a test application.
pub struct TestAppBuilder {
    pub env: HashMap<String, String>,
    pub db_name: Option<String>,
}

impl TestAppBuilder {
    pub fn new() -> Self {
        let mut env = HashMap::new();
        env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
        env.insert("TESSERA_MASTER_KEY".into(), STANDARD.encode([42u8; 32]));
        env.insert("TESSERA_BOOTSTRAP_ADMIN_SECRET".into(), ADMIN_SECRET.into());
        env.insert("TESSERA_DB_MAX_CONNECTIONS".into(), POOL_SIZE.to_string());
        env.insert("TESSERA_REDIS_PREFIX".into(), format!("tessera-test-{}", Uuid::new_v4().simple()));
        Self { env, db_name: None }
    }

    pub fn set(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn with_redis(self) -> Self {
        let url = redis_url();
        self.set("TESSERA_REDIS_URL", &url)
    }

    pub async fn spawn(self) -> TestApp {
        init_logs();
        let slot = database_slot().await;
        let (db_name, owns_db) = match self.db_name {
            Some(n) => (n, false),
            None => (fresh_database().await, true),
        };
        let mut env = self.env;
        env.insert("TESSERA_DATABASE_URL".into(), format!("{}/{db_name}", server_url()));
        let config = Config::from_map(&env).expect("test config");
        let clock = Clock::default();
        let app = match Application::build_with_clock(config, clock.clone()).await {
            Ok(app) => app,
            Err(e) if is_full(&format!("{e} {e:?}")) => {
                if owns_db {
                    drop_database(db_name);
                }
                panic!("{}", no_free_connection(&e.to_string()).await)
            }
            Err(e) => panic!("app builds: {e:?}"),
        };
        let port = app.port();
        let parts = app.parts().clone();
        let shutdown = app.shutdown_token();
        let handle = tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            addr: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            parts,
            clock,
            db_name,
            owns_db,
            shutdown,
            handle: Some(handle),
            env,
            _slot: slot,
        }
    }
}

pub struct TestApp {
    pub addr: String,
    pub http: reqwest::Client,
    pub parts: Parts,
    pub clock: Clock,
    pub db_name: String,
    owns_db: bool,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub env: HashMap<String, String>,
    /// Held until the instance is dropped (see [`database_slot`]).
    _slot: Arc<tokio::sync::OwnedSemaphorePermit>,
}

pub async fn spawn_app() -> TestApp {
    TestAppBuilder::new().spawn().await
}

impl TestApp {
    /// A second instance on the same database (and the same Redis prefix).
    pub async fn spawn_peer(&self) -> TestApp {
        let mut b = TestAppBuilder::new();
        b.env = self.env.clone();
        b.env.insert("TESSERA_BIND".into(), "127.0.0.1:0".into());
        b.db_name = Some(self.db_name.clone());
        b.spawn().await
    }

    /// Stops the server gracefully and waits for it (background tasks flush).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    pub async fn token_for(&self, client_id: &str, secret: &str, scope: Option<&str>) -> Response {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        self.http.post(self.url("/oauth/token")).basic_auth(client_id, Some(secret)).form(&form).send().await.unwrap()
    }

    pub async fn admin_token(&self) -> String {
        let res = self.token_for("admin", ADMIN_SECRET, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http.post(self.url(path)).bearer_auth(token).json(body).send().await.unwrap()
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> Response {
        self.http.delete(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    /// Registers a confidential client and returns (client_id, secret).
    pub async fn create_client(&self, grants: &[&str], scopes: &[&str]) -> (String, String) {
        let admin = self.admin_token().await;
        let res = self
            .post_json(
                "/v1/admin/clients",
                &admin,
                &json!({"name": "test client", "grant_types": grants, "scopes": scopes}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let body: Value = res.json().await.unwrap();
        (body["client_id"].as_str().unwrap().into(), body["client_secret"].as_str().unwrap().into())
    }

    /// A client-credentials access token with `scopes`.
    pub async fn token_with_scopes(&self, scopes: &[&str]) -> String {
        let (id, secret) = self.create_client(&["client_credentials"], scopes).await;
        let res = self.token_for(&id, &secret, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn db(&self) -> PgConnection {
        connect(&format!("{}/{}", server_url(), self.db_name)).await
    }

    /// The whole database as `pg_dump` writes it (schema and every row, as SQL text).
    pub fn pg_dump(&self) -> String {
        let out = std::process::Command::new("pg_dump")
            .arg("--no-owner")
            .arg(format!("{}/{}", server_url(), self.db_name))
            .output()
            .expect("pg_dump is installed (postgresql-client)");
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        if self.owns_db {
            drop_database(self.db_name.clone());
            if let (Some(url), Some(prefix)) = (self.env.get("TESSERA_REDIS_URL"), self.env.get("TESSERA_REDIS_PREFIX"))
            {
                drop_redis_keys(url.clone(), prefix.clone());
            }
        }
    }
}

/// Deletes the test's Redis keys (its stream, its revoked-key sets): nothing is left behind.
fn drop_redis_keys(url: String, prefix: String) {
    let _ = std::thread::spawn(move || {
        let Ok(client) = redis::Client::open(url) else { return };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else { return };
        let keys: Vec<String> = match redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con) {
            Ok(k) => k,
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut con);
        }
    })
    .join();
}

/// Asserts an RFC 9457 problem with `status` and `code`; returns the body.
pub async fn assert_problem(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    assert!(ct.starts_with("application/problem+json"), "content-type was {ct:?}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    for k in ["type", "title", "detail"] {
        assert!(body[k].is_string(), "problem lacks {k}: {body}");
    }
    body
}

/// Asserts an RFC 6749 error with `status` and `error`; returns the body.
pub async fn assert_oauth_error(res: Response, status: u16, error: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "status");
    assert_eq!(res.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string());
    body
}

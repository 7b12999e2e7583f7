//! Postgres for the tests: the server, the template database and each test's clone.

use std::time::Duration;

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Server URL of Postgres for tests (`DATABASE_URL` without a database name is fine).
pub fn server_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // Strip the database name: we choose our own.
    match url.rfind('/') {
        Some(i) if i > "postgres://".len() => url[..i].to_owned(),
        _ => url,
    }
}

/// A connection to the server's `postgres` database.
pub async fn admin_connection() -> PgConnection {
    connect(&format!("{}/postgres", server_url())).await
}

/// A connection for the test itself; when Postgres refuses, the failure says why in plain words
/// (the machine's Postgres is shared, and `max_connections` is a common reason).
pub async fn connect(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(c) => c,
        Err(e) => {
            let said = e.to_string();
            let why = if said.contains("too many clients") || said.contains("remaining connection slots") {
                "Postgres has no free connection: max_connections is shared by everything on this machine. \
                 Stop other clients or run fewer tests at once (--test-threads)"
            } else if said.contains("Connection refused") {
                "nothing answers at the Postgres address: start it (scripts/test does) or set DATABASE_URL"
            } else {
                "Postgres refused the test's connection"
            };
            panic!("{why}: {said}");
        }
    }
}

fn migrations_fingerprint() -> String {
    let mut names: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut all = Vec::new();
    for p in names {
        all.extend(std::fs::read(p).unwrap());
    }
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, &all).as_ref()[..6])
}

/// Creates the template database once (per fingerprint), under an advisory lock so parallel test
/// processes do not race.
pub(super) async fn template() -> String {
    static NAME: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    NAME.get_or_init(|| async {
        let name = format!("tessera_tpl_{}", migrations_fingerprint());
        let mut admin = connect(&format!("{}/postgres", server_url())).await;
        sqlx::query("SELECT pg_advisory_lock(77001)").execute(&mut admin).await.unwrap();
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        if !exists {
            let building = format!("{name}_building");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)")).execute(&mut admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {building}")).execute(&mut admin).await.unwrap();
            let pool = sqlx::PgPool::connect(&format!("{}/{building}", server_url())).await.unwrap();
            tessera::db::MIGRATOR.run(&pool).await.unwrap();
            pool.close().await;
            sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}")).execute(&mut admin).await.unwrap();
        }
        sqlx::query("SELECT pg_advisory_unlock(77001)").execute(&mut admin).await.unwrap();
        name
    })
    .await
    .clone()
}

/// A fresh database cloned from the template.
pub async fn fresh_database() -> String {
    let tpl = template().await;
    let name = format!("tessera_test_{}", Uuid::new_v4().simple());
    let mut admin = connect(&format!("{}/postgres", server_url())).await;
    // CREATE DATABASE … TEMPLATE conflicts when another clone is being made at the same instant.
    for attempt in 0..50 {
        match sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {tpl}")).execute(&mut admin).await {
            Ok(_) => break,
            Err(e) if attempt < 49 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    name
}

pub(super) fn drop_database(name: String) {
    let url = format!("{}/postgres", server_url());
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            if let Ok(mut c) = PgConnection::connect(&url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await;
            }
        });
    })
    .join();
}

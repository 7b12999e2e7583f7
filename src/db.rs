//! Postgres: create the database if missing, pool with a statement timeout, migrations.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};

use crate::config::Config;

/// Embedded migrations from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors opening or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL could not be parsed.
    #[error("TESSERA_DATABASE_URL: {0}")]
    Url(sqlx::Error),
    /// Postgres refused or could not be reached.
    #[error("postgres: {0}")]
    Connect(sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Connects to Postgres, creating the database when missing, and returns a pool.
pub async fn connect(config: &Config) -> Result<PgPool, DbError> {
    let opts = PgConnectOptions::from_str(config.database_url.expose())
        .map_err(DbError::Url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
        .options([("statement_timeout", config.db_statement_timeout.as_millis().to_string())]);
    create_database_if_missing(&opts).await?;
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .connect_with(opts)
        .await
        .map_err(DbError::Connect)
}

/// Applies pending migrations (safe to run from several instances at once: sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

async fn create_database_if_missing(opts: &PgConnectOptions) -> Result<(), DbError> {
    let Some(name) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    // Connecting straight away is the common case; only when the database is missing do we create it.
    match PgConnection::connect_with(opts).await {
        Ok(conn) => {
            let _ = conn.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(DbError::Connect(e)),
    }
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres")).await.map_err(DbError::Connect)?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another instance created it first.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
        Err(e) => return Err(DbError::Connect(e)),
    }
    let _ = admin.close().await;
    Ok(())
}

//! Postgres: create the database if missing, pool with a statement timeout, migrations.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};

use crate::config::Config;

pub mod listen;

/// Embedded migrations from `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Errors opening or preparing the database. Each names the setting, the server and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL could not be parsed.
    #[error("TESSERA_DATABASE_URL: {0}")]
    Url(sqlx::Error),
    /// Postgres refused or could not be reached.
    #[error("TESSERA_DATABASE_URL: cannot use {target}: {source}{}", hint(source))]
    Connect {
        /// Which database on which server (no password).
        target: String,
        /// What Postgres or the network said.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Which database `config` names, for messages (never the password).
pub fn target(config: &Config) -> String {
    PgConnectOptions::from_str(config.database_url.expose())
        .map(|o| describe(&o))
        .unwrap_or_else(|_| "the database in TESSERA_DATABASE_URL".to_owned())
}

/// "database tessera on 127.0.0.1:5432", for messages.
pub fn describe(opts: &PgConnectOptions) -> String {
    format!("database {} on {}:{}", opts.get_database().unwrap_or("(default)"), opts.get_host(), opts.get_port())
}

/// What to do about the usual ways a connection fails.
fn hint(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("53300") => {
                " — Postgres has no free connection (max_connections reached): stop other clients, or lower \
                 TESSERA_DB_MAX_CONNECTIONS on each instance so their sum fits"
            }
            Some("28000" | "28P01") => " — the role or password in TESSERA_DATABASE_URL is refused",
            Some("3D000") => " — the database does not exist and could not be created",
            Some("57P03") => " — Postgres is starting up or shutting down; try again in a moment",
            _ => "",
        },
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            " — is Postgres running and reachable there? (scripts/run starts a local one)"
        }
        sqlx::Error::Tls(_) => " — TLS to Postgres failed: check sslmode in TESSERA_DATABASE_URL",
        _ => "",
    }
}

/// How often Postgres checks, while one of our statements runs, that this instance is still there
/// (`client_connection_check_interval`, PostgreSQL 14+). A statement waiting on a lock otherwise
/// keeps the session of a dead instance, and every lock it holds (the relay's advisory lock, rows
/// it updated), until that wait ends; with the check it ends within this interval of the death.
const CLIENT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A connection idle at least this long is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Pool settings both pools share. sqlx pings a connection when it comes back to the pool (a
/// round trip, in a task of its own) and, by default, again before handing it out: two round
/// trips around every query, on the request path the second. Here only a connection that sat
/// idle for [`PING_AFTER_IDLE`] or more is pinged before use; a busy pool hands out connections
/// that answered a moment ago. A failed ping closes that connection and the pool takes or opens
/// another. The cost: a connection Postgres dropped within a second of its last use fails its
/// next statement (a 503), and the pool then replaces it.
fn pool_options(max: u32, min: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < PING_AFTER_IDLE {
                    return Ok(true);
                }
                conn.ping().await.map(|()| true)
            })
        })
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Not in the startup options: a server older than 14 would refuse the connection.
                // There (and where the platform cannot poll for it) a session just goes without.
                let set = sqlx::query("SELECT set_config('client_connection_check_interval', $1, false)")
                    .bind(CLIENT_CHECK_INTERVAL.as_millis().to_string())
                    .execute(&mut *conn)
                    .await;
                if let Err(e) = set {
                    tracing::debug!(error = %e, "client_connection_check_interval not set");
                }
                Ok(())
            })
        })
}

/// Connects to Postgres, creating the database when missing, and returns a pool.
pub async fn connect(config: &Config) -> Result<PgPool, DbError> {
    let opts = PgConnectOptions::from_str(config.database_url.expose())
        .map_err(DbError::Url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
        .options([("statement_timeout", config.db_statement_timeout.as_millis().to_string())]);
    let target = describe(&opts);
    create_database_if_missing(&opts).await.map_err(|source| DbError::Connect { target: target.clone(), source })?;
    pool_options(config.db_max_connections, 1)
        .connect_with(opts)
        .await
        .map_err(|source| DbError::Connect { target, source })
}

/// The pool reports read from: the read replica of `TESSERA_DATABASE_REPLICA_URL`, connected
/// lazily (a replica that is down fails those reads with 503, never the start or the primary's
/// work) with every transaction read-only; else `primary` itself. Errors: an unreadable URL.
pub fn reads(config: &Config, primary: &PgPool) -> Result<PgPool, DbError> {
    let Some(url) = &config.database_replica_url else {
        return Ok(primary.clone());
    };
    let opts = PgConnectOptions::from_str(url.expose())
        .map_err(DbError::Url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500))
        .options([
            ("statement_timeout", config.db_statement_timeout.as_millis().to_string()),
            ("default_transaction_read_only", "on".to_owned()),
        ]);
    Ok(pool_options(config.db_max_connections.div_ceil(2), 0).connect_lazy_with(opts))
}

/// Says in the log when Postgres stops answering and when it answers again, naming the variable
/// and the server: request errors alone (503s) say neither. Fed by a query the service makes every
/// second anyway (the revocation catch-up).
#[derive(Debug)]
pub struct Reachability {
    target: String,
    down: bool,
}

impl Reachability {
    /// Watches the database `config` names.
    pub fn new(config: &Config) -> Self {
        Self { target: target(config), down: false }
    }

    /// Records the outcome of one query; returns whether Postgres is now seen as down.
    pub fn observe<T, E: std::fmt::Display>(&mut self, outcome: &Result<T, E>) -> bool {
        match outcome {
            Ok(_) if self.down => {
                self.down = false;
                tracing::info!(database = %self.target, "TESSERA_DATABASE_URL: Postgres answers again");
            }
            Err(e) if !self.down => {
                self.down = true;
                tracing::warn!(
                    database = %self.target,
                    error = %e,
                    "TESSERA_DATABASE_URL: Postgres does not answer; requests that need it get 503 until it does"
                );
            }
            _ => {}
        }
        self.down
    }
}

/// Applies pending migrations (safe to run from several instances at once: sqlx takes a lock).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

async fn create_database_if_missing(opts: &PgConnectOptions) -> Result<(), sqlx::Error> {
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
        Err(e) => return Err(e),
    }
    let mut admin = PgConnection::connect_with(&opts.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
        Ok(_) => tracing::info!(database = %name, "created database"),
        // Another instance created it first.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
        Err(e) => return Err(e),
    }
    let _ = admin.close().await;
    Ok(())
}

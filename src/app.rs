//! Building and running one Tessera instance: the same entry for the binary and the tests.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    apikeys::ApiKeys,
    clients::{self, ClientAuth},
    clock::Clock,
    config::{Config, MasterKeySource},
    db,
    revocation::{bus::Bus, consumer, relay, RevokedSet},
    secrets::MasterKey,
    signing::{lifecycle, KeyStore},
    state::{AppState, Inner},
    usage::UsageRecorder,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Postgres could not be prepared.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The development master key file could not be read or written.
    #[error("TESSERA_MASTER_KEY_FILE: {0}")]
    MasterKeyFile(std::io::Error),
    /// Redis URL refused by the client library.
    #[error("TESSERA_REDIS_URL: {0}")]
    Redis(redis::RedisError),
    /// The listen address could not be bound.
    #[error("TESSERA_BIND: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The signing keys in the database were sealed under another master key. Nothing was written.
    #[error(
        "{key_source}: the signing keys in {database} were sealed with a different master key (key {kid} \
         cannot be opened with this one). Nothing was changed. Either start with the master key they were \
         sealed with (TESSERA_MASTER_KEY, or TESSERA_MASTER_KEY_FILE pointing at the old key file), or, if \
         nothing in that database needs keeping, start on a new one (drop it, or point TESSERA_DATABASE_URL \
         elsewhere)"
    )]
    MasterKeyMismatch {
        /// Where this process took its master key from.
        key_source: String,
        /// Which database (no password).
        database: String,
        /// A key that cannot be opened.
        kid: String,
    },
    /// Start-up work failed.
    #[error("start-up failed: {0}")]
    Init(#[from] crate::error::Error),
}

/// A built instance, bound to its port, with its background tasks running.
pub struct Application {
    listener: TcpListener,
    /// Connections open at once at most (see [`crate::http::server::connection_cap`]).
    connection_cap: usize,
    state: AppState,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Resolves the master key, generating the development key file when none is configured.
pub fn master_key(config: &Config) -> Result<MasterKey, StartError> {
    match &config.master_key {
        MasterKeySource::Env(k) => Ok(k.clone()),
        MasterKeySource::DevFile(path) => {
            tracing::warn!(
                path = %path.display(),
                "TESSERA_MASTER_KEY is not set: using a development master key kept in a local file. \
                 DO NOT USE THIS IN PRODUCTION — set TESSERA_MASTER_KEY to base64 of 32 random bytes."
            );
            MasterKey::load_or_create_dev_file(path).map_err(StartError::MasterKeyFile)
        }
    }
}

impl Application {
    /// Connects, migrates, ensures keys and the bootstrap client, binds, and starts background tasks.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        Self::build_with_clock(config, Clock::default()).await
    }

    /// As [`Application::build`], with a given clock (tests advance it).
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Self, StartError> {
        let master = master_key(&config)?;
        let keys = master.derive_keys();
        let pool = db::connect(&config).await?;
        // Before anything is written, migrations included.
        if let Some(kid) = crate::signing::unreadable_key(&pool, &keys.signing_key_wrap).await? {
            let key_source = match &config.master_key {
                MasterKeySource::Env(_) => "TESSERA_MASTER_KEY".to_owned(),
                MasterKeySource::DevFile(path) => {
                    format!("TESSERA_MASTER_KEY is not set and the development key file {} was used", path.display())
                }
            };
            return Err(StartError::MasterKeyMismatch { key_source, database: db::target(&config), kid });
        }
        db::migrate(&pool).await?;
        let bus = match &config.redis_url {
            Some(url) => Bus::redis(url.expose(), &config.redis_prefix).map_err(StartError::Redis)?,
            None => Bus::in_process(),
        };
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartError::Bind { addr: config.bind, source })?;
        let connection_cap = crate::http::server::connection_cap(config.connections.max_connections);

        let now = clock.now();
        {
            let ctx = lifecycle::Ctx { db: &pool, config: &config, wrap_key: &keys.signing_key_wrap, now };
            lifecycle::ensure(&ctx).await?;
        }
        if let Some(secret) = &config.bootstrap_admin_secret {
            clients::ensure_admin(&pool, secret, now).await?;
        }
        let signing = KeyStore::new(keys.signing_key_wrap, config.jwks_max_age);
        signing.reload(&pool, now, true).await?;
        let revoked = RevokedSet::default();
        revoked
            .load(&pool, now, time::Duration::try_from(config.max_access_token_ttl()).unwrap_or(time::Duration::DAY))
            .await?;

        let argon2 = crate::passwords::Pool::new(config.argon2_workers as usize);
        let guessing = crate::throttle::SourceLimiter::new(
            config.source_max_failures,
            config.redis_url.as_ref().map(crate::secrets::RedactedUrl::expose),
            &config.redis_prefix,
        )
        .map_err(StartError::Redis)?;
        let state = AppState::new(Inner {
            clients: ClientAuth::new(keys.client_secret_cache.clone(), keys.client_secret_hmac.clone(), argon2.clone()),
            argon2,
            guessing,
            apikeys: ApiKeys::with_budget(config.api_key_cache_bytes),
            usage: UsageRecorder::new(config.usage_counting),
            metrics: crate::metrics::install(),
            verified_tokens: Default::default(),
            config,
            db: pool,
            clock,
            keys,
            bus,
            revoked,
            signing,
        });
        let shutdown = CancellationToken::new();
        let tasks = spawn_background(&state, &shutdown);
        Ok(Self { listener, connection_cap, state, shutdown, tasks })
    }

    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state (tests inspect and drive it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Cancelling this token stops the server gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until `stop` resolves or the shutdown token is cancelled, then drains in-flight
    /// requests and stops background tasks (which flush what they hold).
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let app = crate::http::service(self.state.clone(), self.state.config.request_timeout);
        let token = self.shutdown.clone();
        let graceful = {
            let token = token.clone();
            async move {
                tokio::select! {
                    () = stop => {},
                    () = token.cancelled() => {},
                }
                tracing::info!("shutting down: draining in-flight requests");
            }
        };
        let limits = self.state.config.connections;
        crate::http::server::serve(self.listener, app, limits, self.connection_cap, graceful).await;
        token.cancel();
        // One deadline for all of them together: a task stuck on an unreachable database must not
        // hold the process for 10 s per task.
        if tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(self.tasks)).await.is_err() {
            tracing::warn!("background tasks did not stop within 10 s; exiting without them");
        }
        Ok(())
    }
}

fn spawn_background(state: &AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(relay::run(state.db.clone(), state.bus.clone(), shutdown.clone())),
        tokio::spawn(consumer::run(state.clone(), shutdown.clone())),
        tokio::spawn(state.bus.clone().run_subscriber(shutdown.clone())),
        tokio::spawn(key_maintenance(state.clone(), shutdown.clone())),
        tokio::spawn(crate::maintenance::run(state.clone(), shutdown.clone())),
        tokio::spawn(crate::detector::run(state.clone(), shutdown.clone())),
        tokio::spawn(crate::usage::run_flusher(state.clone(), shutdown.clone())),
    ];
    if let Some(handle) = state.metrics.clone() {
        tasks.push(tokio::spawn(crate::metrics::run_upkeep(handle, shutdown.clone())));
    }
    tasks
}

/// Keeps the in-memory key set current (poll every 2 s) and runs scheduled rotation (every minute).
async fn key_maintenance(state: AppState, shutdown: CancellationToken) {
    let mut reload = tokio::time::interval(Duration::from_secs(2));
    let mut rotation = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = reload.tick() => {
                if let Err(e) = state.signing.reload(&state.db, state.clock.now(), false).await {
                    tracing::warn!(error = %e, "signing key reload failed");
                }
            }
            _ = rotation.tick() => {
                let ctx = lifecycle::Ctx { db: &state.db, config: &state.config, wrap_key: &state.keys.signing_key_wrap, now: state.clock.now() };
                match lifecycle::rotate_if_due(&ctx).await {
                    Ok(Some(kid)) => {
                        tracing::info!(%kid, "scheduled signing key rotation");
                        let _ = state.signing.reload(&state.db, state.clock.now(), true).await;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduled rotation failed"),
                }
            }
        }
    }
}

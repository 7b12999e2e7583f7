//! Building and running one Tessera instance: the same entry for the binary and the tests.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    apikeys::{ApiKeys, KeyCache},
    audit::Audit,
    clients::{self, ClientAuth, Clients},
    clock::Clock,
    config::{Config, MasterKeySource},
    db,
    http::state::{AppState, Services},
    maintenance::Housekeeping,
    revocation::{bus::Bus, consumer::Consumer, relay, Feed, RevokedSet},
    secrets::MasterKey,
    signin::SignIn,
    signing::{KeyStore, Signing},
    tokens::Tokens,
    usage::{Usage, UsageRecorder},
    users::Users,
    webhooks::Webhooks,
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

/// The parts the services are built from, shared with them: for tests (and tools) that inspect an
/// instance or drive its schedules by hand.
#[derive(Clone)]
pub struct Parts {
    /// Postgres pool.
    pub db: sqlx::PgPool,
    /// The one clock.
    pub clock: Clock,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// What this instance knows to be revoked.
    pub revoked: Arc<RevokedSet>,
    /// API-key verification cache.
    pub apikeys: Arc<KeyCache>,
    /// Client authentication with its caches.
    pub clients: Arc<ClientAuth>,
    /// The bounded Argon2 pool.
    pub argon2: crate::passwords::Pool,
    /// In-memory usage counters.
    pub usage: Arc<UsageRecorder>,
    /// Signing keys.
    pub signing: Signing,
    /// Revocation fan-out.
    pub bus: Bus,
    /// Token and revocation-log housekeeping.
    pub housekeeping: Housekeeping,
    /// Usage service (anomaly detection and retention passes).
    pub detector: Usage,
    /// Webhooks (the dispatcher and the expiry scheduler can be run by hand).
    pub webhooks: Webhooks,
}

/// A built instance, bound to its port, with its background tasks running.
pub struct Application {
    listener: TcpListener,
    /// Connections open at once at most (see [`crate::http::server::connection_cap`]).
    connection_cap: usize,
    state: AppState,
    parts: Parts,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Every key of this process: the master key resolved (see [`master_key`]), with the previous
/// master key and the HMAC secrets as configured, and the keys derived from them.
pub fn derived_keys(config: &Config) -> Result<crate::secrets::DerivedKeys, StartError> {
    let master = master_key(config)?;
    Ok(crate::secrets::derive_keys(crate::secrets::KeySources {
        master: &master,
        master_previous: config.master_key_previous.as_ref(),
        hmac: config.hmac_secret.as_ref(),
        hmac_previous: config.hmac_secret_previous.as_ref(),
    }))
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
        let keys = derived_keys(&config)?;
        let pool = db::connect(&config).await?;
        // Before anything is written, migrations included.
        if let Some(kid) = crate::signing::unreadable_key(&pool, &keys.sealer).await? {
            let key_source = match &config.master_key {
                MasterKeySource::Env(_) => "TESSERA_MASTER_KEY".to_owned(),
                MasterKeySource::DevFile(path) => {
                    format!("TESSERA_MASTER_KEY is not set and the development key file {} was used", path.display())
                }
            };
            return Err(StartError::MasterKeyMismatch { key_source, database: db::target(&config), kid });
        }
        db::migrate(&pool).await?;
        let labelled = crate::rekey::label_unversioned(&pool, &keys).await?;
        if labelled > 0 {
            tracing::info!(labelled, "recorded the HMAC key id of hashes stored before key ids existed");
        }
        let bus = match &config.redis_url {
            Some(url) => Bus::redis(url.expose(), &config.redis_prefix).map_err(StartError::Redis)?,
            None => Bus::in_process(),
        };
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| StartError::Bind { addr: config.bind, source })?;
        let connection_cap = crate::http::server::connection_cap(config.connections.max_connections);

        let config = Arc::new(config);
        let now = clock.now();
        let store = Arc::new(KeyStore::new(keys.sealer.clone(), config.jwks_max_age));
        let signing = Signing::new(pool.clone(), clock.clone(), config.clone(), keys.sealer.clone(), store);
        signing.ensure_and_load().await?;
        if let Some(secret) = &config.bootstrap_admin_secret {
            clients::ensure_admin(&pool, secret, now).await?;
        }
        crate::portal::bootstrap::ensure_client(&pool, &config.issuer, now).await?;
        let revoked = Arc::new(RevokedSet::default());
        revoked
            .load(&pool, now, time::Duration::try_from(config.max_access_token_ttl()).unwrap_or(time::Duration::DAY))
            .await?;

        let argon2 = crate::passwords::Pool::new(config.argon2_workers as usize);
        let guessing = Arc::new(
            crate::throttle::SourceLimiter::new(
                config.source_max_failures,
                config.redis_url.as_ref().map(crate::secrets::RedactedUrl::expose),
                &config.redis_prefix,
            )
            .map_err(StartError::Redis)?,
        );
        let limiter = Arc::new(
            crate::ratelimit::RateLimiter::new(
                config.redis_url.as_ref().map(crate::secrets::RedactedUrl::expose),
                &config.redis_prefix,
            )
            .map_err(StartError::Redis)?,
        );
        let recorder = Arc::new(UsageRecorder::new(config.usage_counting));
        let key_cache = Arc::new(KeyCache::new(
            config.api_key_cache_bytes,
            config.api_key_cache_ttl,
            crate::apikeys::cache::NEGATIVE_CAPACITY,
        ));
        let client_auth =
            Arc::new(ClientAuth::new(keys.client_secret_cache.clone(), keys.client_secret.clone(), argon2.clone()));

        let apikeys = ApiKeys::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            keys.api_key.clone(),
            key_cache.clone(),
            revoked.clone(),
            recorder.clone(),
            limiter,
        );
        let clients = Clients::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            keys.client_secret.clone(),
            client_auth.clone(),
            guessing.clone(),
            revoked.clone(),
            apikeys.clone(),
        );
        let users = Users::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            argon2.clone(),
            guessing,
            revoked.clone(),
            apikeys.clone(),
        );
        let tokens = Tokens::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            (keys.refresh_token.clone(), keys.refresh_successor.clone(), keys.authorization_code_hmac.clone()),
            signing.clone(),
            revoked.clone(),
            clients.clone(),
            users.clone(),
        );
        let reads = db::reads(&config, &pool)?;
        let webhooks = Webhooks::new(pool.clone(), clock.clone(), config.clone(), keys.webhook_sealer.clone())?;
        let leaks = crate::apikeys::leaks::LeakReports::new(apikeys.clone());
        let signin = SignIn::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            clients.clone(),
            users.clone(),
            tokens.clone(),
            keys.session_hmac.clone(),
            keys.csrf_hmac.clone(),
        );
        let portal = crate::portal::Portal::new(
            pool.clone(),
            clock.clone(),
            config.clone(),
            tokens.clone(),
            keys.portal_hmac.clone(),
        );
        let usage = Usage::new(pool.clone(), reads.clone(), clock.clone(), config.clone(), recorder.clone());
        let housekeeping = Housekeeping::new(pool.clone(), clock.clone(), config.clone(), revoked.clone());
        // Open revocation streams end with the server, so a graceful stop is not held by them.
        let shutdown = CancellationToken::new();
        // Every cache that revocation events change, in one place.
        let consumer = Consumer::new(
            pool.clone(),
            bus.clone(),
            config.clone(),
            revoked.clone(),
            vec![client_auth.clone(), key_cache.clone(), Arc::new(signing.clone())],
        );

        let state = AppState::new(Services {
            config: config.clone(),
            tokens,
            signin,
            portal,
            clients,
            users,
            apikeys,
            signing: signing.clone(),
            revocations: Feed::new(pool.clone(), revoked.clone(), config.revocation_stream_heartbeat, shutdown.clone()),
            usage: usage.clone(),
            audit: Audit::new(reads.clone()),
            webhooks: webhooks.clone(),
            leaks,
            db: pool.clone(),
            bus: bus.clone(),
            metrics: crate::metrics::install(),
        });
        let parts = Parts {
            db: pool.clone(),
            clock: clock.clone(),
            config: config.clone(),
            revoked,
            apikeys: key_cache,
            clients: client_auth,
            argon2,
            usage: recorder,
            signing: signing.clone(),
            bus: bus.clone(),
            housekeeping: housekeeping.clone(),
            detector: usage.clone(),
            webhooks: webhooks.clone(),
        };
        let mut tasks = vec![
            tokio::spawn(relay::run(pool.clone(), bus.clone(), shutdown.clone())),
            tokio::spawn(consumer.run(shutdown.clone())),
            tokio::spawn(bus.run_subscriber(shutdown.clone())),
            tokio::spawn(signing.run(shutdown.clone())),
            tokio::spawn(housekeeping.clone().run(shutdown.clone())),
            tokio::spawn(usage.clone().run_detector(shutdown.clone())),
            tokio::spawn(usage.run_flusher(shutdown.clone())),
            tokio::spawn(webhooks.clone().run_dispatcher(shutdown.clone())),
            tokio::spawn(webhooks.run_scheduler(shutdown.clone())),
        ];
        if let Some(handle) = state.metrics.clone() {
            tasks.push(tokio::spawn(crate::metrics::run_upkeep(handle, shutdown.clone())));
        }
        Ok(Self { listener, connection_cap, state, parts, shutdown, tasks })
    }

    /// The bound port (tests bind port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The services (tests inspect and drive them).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The parts the services share (tests inspect them and run schedules on demand).
    pub fn parts(&self) -> &Parts {
        &self.parts
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

//! Shared application state: one `Arc` handed to every handler and background task.

use std::{ops::Deref, sync::Arc};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    apikeys::ApiKeys, clients::ClientAuth, clock::Clock, config::Config, revocation::bus::Bus, revocation::RevokedSet,
    secrets::DerivedKeys, signing::KeyStore, usage::UsageRecorder,
};

/// Cheaply clonable handle to everything a request may need.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// Validated configuration.
    pub config: Config,
    /// Postgres pool.
    pub db: PgPool,
    /// The one clock.
    pub clock: Clock,
    /// Keys derived from the master key.
    pub keys: DerivedKeys,
    /// Revocation fan-out.
    pub bus: Bus,
    /// What this instance knows to be revoked.
    pub revoked: RevokedSet,
    /// Signing keys and the JWKS, in memory.
    pub signing: KeyStore,
    /// Client authentication with its success cache.
    pub clients: ClientAuth,
    /// API-key verification cache.
    pub apikeys: ApiKeys,
    /// Access tokens already verified.
    pub verified_tokens: crate::tokens::VerifiedTokens,
    /// In-memory usage counters.
    pub usage: UsageRecorder,
    /// Prometheus renderer.
    pub metrics: Option<PrometheusHandle>,
    /// The bounded Argon2 pool for checks on behalf of callers.
    pub argon2: crate::passwords::Pool,
    /// Failed or in-flight credential checks per source address.
    pub guessing: crate::throttle::SourceLimiter,
}

impl AppState {
    /// Wraps the state.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

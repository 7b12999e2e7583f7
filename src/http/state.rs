//! What every handler can reach: the domain services, built once by the composition root
//! ([`crate::app`]), plus the few things only the HTTP surface needs (readiness probes, the
//! metrics renderer, the edge's settings).

use std::{ops::Deref, sync::Arc};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::{
    apikeys::ApiKeys, audit::Audit, clients::Clients, config::Config, revocation::bus::Bus, revocation::Feed,
    signin::SignIn, signing::Signing, tokens::Tokens, usage::Usage, users::Users, webhooks::Webhooks,
};

/// Cheaply clonable handle to the services.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

/// The services and probes behind [`AppState`].
pub struct Services {
    /// Validated configuration (issuer, edge limits, trusted proxies).
    pub config: Arc<Config>,
    /// Tokens: grants, revocation, introspection, `/v1` bearer validation.
    pub tokens: Tokens,
    /// Browser sign-in: the authorization endpoint, sessions, UserInfo, logout.
    pub signin: SignIn,
    /// The developer portal's sessions and sign-in.
    pub portal: crate::portal::Portal,
    /// OAuth clients.
    pub clients: Clients,
    /// Users.
    pub users: Users,
    /// API keys.
    pub apikeys: ApiKeys,
    /// Signing keys and the JWKS.
    pub signing: Signing,
    /// The revocation feed.
    pub revocations: Feed,
    /// Usage and anomalies.
    pub usage: Usage,
    /// The audit log.
    pub audit: Audit,
    /// Webhook endpoints and their delivery logs.
    pub webhooks: Webhooks,
    /// Leak reports.
    pub leaks: crate::apikeys::leaks::LeakReports,
    /// Postgres, for `/readyz` and the pool gauges only.
    pub db: PgPool,
    /// The revocation bus, for `/readyz` only.
    pub bus: Bus,
    /// Prometheus renderer (none when another recorder was installed first, as in tests).
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// Wraps the services.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

//! Webhooks: endpoints ([`endpoints`]) that receive signed ([`sign`]) notices of what happens to
//! keys, written to a Postgres outbox in the transaction of the change ([`events`]), delivered and
//! retried by whichever instance claims them ([`dispatch`]), only to destinations the SSRF guard
//! accepts ([`ssrf`]); and the expiry notices scheduled per key ([`expiry`]).

pub mod dispatch;
pub mod endpoints;
pub mod events;
pub mod expiry;
pub mod sign;
pub mod ssrf;

use std::sync::Arc;

use sqlx::PgPool;

pub use endpoints::{CreatedEndpoint, DeliveryLogEntry, EndpointPatch, EndpointView, NewEndpoint};
pub use events::{Event, EventType};

use crate::{clock::Clock, config::Config, error::Result};

/// The webhook service: endpoint management, the dispatcher and the expiry scheduler.
#[derive(Clone)]
pub struct Webhooks {
    pub(crate) db: PgPool,
    pub(crate) clock: Clock,
    pub(crate) config: Arc<Config>,
    /// Seals endpoint secrets at rest (AES-256-GCM under a key derived from the master key).
    sealer: crate::secrets::Sealer,
    /// The delivery client (no redirects, guarded DNS, 10 s).
    client: reqwest::Client,
}

impl Webhooks {
    /// A service sealing endpoint secrets with `sealer` (and opening them under the current or
    /// the previous master key).
    ///
    /// # Errors
    /// [`crate::error::Error::Internal`] when the HTTP client cannot be built.
    pub fn new(db: PgPool, clock: Clock, config: Arc<Config>, sealer: crate::secrets::Sealer) -> Result<Self> {
        let client = ssrf::client(config.webhooks.allow_private)?;
        Ok(Self { db, clock, config, sealer, client })
    }
}

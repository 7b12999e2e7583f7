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
    /// AES-256-GCM key (derived from the master key) that seals endpoint secrets at rest.
    seal_key: [u8; 32],
    /// The delivery client (no redirects, guarded DNS, 10 s).
    client: reqwest::Client,
}

impl Webhooks {
    /// A service sealing endpoint secrets under `seal_key`.
    ///
    /// # Errors
    /// [`crate::error::Error::Internal`] when the HTTP client cannot be built.
    pub fn new(db: PgPool, clock: Clock, config: Arc<Config>, seal_key: [u8; 32]) -> Result<Self> {
        let client = ssrf::client(config.webhooks.allow_private)?;
        Ok(Self { db, clock, config, seal_key, client })
    }
}

//! The API-key service: what it owns, and the cache upkeep that follows every change.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    cache::KeyCache,
    format::ApiKeySecret,
    lookup::{self, KeyFilter},
    model::ApiKeyView,
};
use crate::{
    clock::Clock,
    config::Config,
    error::Result,
    ratelimit::{Mode, RateLimiter},
    revocation::{consumer::EventSink, Kind, RevocationEvent, RevokedSet},
    secrets::Keyring,
    usage::UsageRecorder,
};

/// API keys: creation, reading, rotation, revocation ([`super::manage`]) and verification
/// ([`super::verify`]). Each method that commits a change also drops this instance's cached record
/// of the key; other instances drop theirs from the change feed.
#[derive(Clone)]
pub struct ApiKeys {
    pub(super) db: PgPool,
    pub(super) clock: Clock,
    pub(super) config: Arc<Config>,
    /// Keys of the keyed hash of API keys (HMAC-SHA-256, hash version 1; see [`super::format`]):
    /// new keys are hashed under the current one; the previous one, during a change of secret,
    /// still finds keys hashed before it, which are then moved to the current one.
    pub(super) hmac: Keyring,
    pub(super) cache: Arc<KeyCache>,
    pub(super) revoked: Arc<RevokedSet>,
    pub(super) usage: Arc<UsageRecorder>,
    /// Rate limits of key groups, shared through Redis.
    pub(super) limiter: Arc<RateLimiter>,
}

impl ApiKeys {
    /// A service hashing keys under `hmac`, caching records in `cache`, refusing keys of owners in
    /// `revoked`, counting verifications in `usage`, limiting their rate with `limiter`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        clock: Clock,
        config: Arc<Config>,
        hmac: Keyring,
        cache: Arc<KeyCache>,
        revoked: Arc<RevokedSet>,
        usage: Arc<UsageRecorder>,
        limiter: Arc<RateLimiter>,
    ) -> Self {
        Self { db, clock, config, hmac, cache, revoked, usage, limiter }
    }

    /// Where rate limits are counted now, asking Redis (for `/readyz`).
    pub async fn rate_limit_mode(&self) -> Mode {
        self.limiter.mode().await
    }

    /// Where rate limits are counted now, as last seen (for the metrics).
    pub fn rate_limit_mode_now(&self) -> Mode {
        self.limiter.current_mode()
    }

    /// Keys across owners for an admin, filtered and paged (see [`lookup::list_all`]).
    pub async fn list_all(&self, filter: &KeyFilter) -> Result<Vec<ApiKeyView>> {
        lookup::list_all(&self.db, filter, self.clock.now()).await
    }

    /// The key a plaintext belongs to, whatever its state (admin lookup of a leaked key).
    ///
    /// # Errors
    /// [`crate::error::Error::NotFound`] when no key has that hash.
    pub async fn lookup(&self, key: &ApiKeySecret) -> Result<ApiKeyView> {
        lookup::by_plaintext(&self.db, &self.hmac, key, self.config.api_key_foreign_formats, self.clock.now()).await
    }

    /// This instance forgets what it cached of `ids` (after a change to their owner committed).
    pub fn forget(&self, ids: &[Uuid]) {
        ids.iter().for_each(|id| self.cache.forget(id));
    }

    /// This instance forgets every cached key of `owner`.
    pub fn forget_owner(&self, owner: &str) {
        self.cache.forget_owner(owner);
    }
}

/// The cache follows the feed: a key revoked or changed, or its owner gone, is dropped.
impl EventSink for KeyCache {
    fn apply(&self, ev: &RevocationEvent, _max_ttl: i64) {
        match ev.kind {
            // Its keys are refused through the revoked set; their cached records are dead weight.
            Kind::Client | Kind::User => self.forget_owner(&ev.id),
            Kind::ApiKey | Kind::ApiKeyChanged => {
                if let Ok(id) = Uuid::parse_str(&ev.id) {
                    self.forget(&id);
                }
            }
            Kind::AccessToken | Kind::RefreshFamily | Kind::SigningKey => {}
        }
    }

    fn api_key_changed(&self, id: &Uuid) {
        self.forget(id);
    }

    fn keys_added(&self) {
        self.forget_missing();
    }

    fn changes_missed(&self) {
        self.forget_all();
        self.forget_missing();
    }
}

//! The signing service: the one place that changes signing keys and keeps this instance's key set
//! in step with Postgres (every change reloads it before answering; a poll every 2 s catches up
//! with other instances' changes, and scheduled rotation runs once a minute).

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    lifecycle::{self, Ctx, KeyInfo},
    KeySet, KeyStore, Signs,
};
use crate::{audit::Actor, clock::Clock, config::Config, error::Result, secrets::Sealer};

/// Signing keys: the in-memory [`KeyStore`] and the lifecycle in Postgres behind it.
#[derive(Clone)]
pub struct Signing {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    sealer: Sealer,
    store: Arc<KeyStore>,
}

impl Signing {
    /// A service over `store`, sealing new private keys with `sealer` (AES-256-GCM, see
    /// [`crate::secrets::seal`]).
    pub fn new(db: PgPool, clock: Clock, config: Arc<Config>, sealer: Sealer, store: Arc<KeyStore>) -> Self {
        Self { db, clock, config, sealer, store }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx { db: &self.db, config: &self.config, sealer: &self.sealer, now: self.clock.now() }
    }

    /// The current key set (active signer, published verifiers, JWKS body and ETag).
    pub fn keys(&self) -> Arc<KeySet> {
        self.store.get()
    }

    /// `Cache-Control` value of the JWKS response.
    pub fn jwks_cache_control(&self) -> bytes::Bytes {
        self.store.cache_control()
    }

    /// Makes sure an active and a next key exist (for access tokens and for ID tokens), then loads
    /// them (start-up).
    ///
    /// # Errors
    /// [`crate::error::Error::Database`] when Postgres fails; `Internal` when a stored key cannot be opened.
    pub async fn ensure_and_load(&self) -> Result<()> {
        lifecycle::ensure(&self.ctx()).await?;
        self.store.reload(&self.db, self.clock.now(), true).await?;
        Ok(())
    }

    /// Every key that signs `signs`, newest first, as the admin API shows them (no private part).
    pub async fn list(&self, signs: Signs) -> Result<Vec<KeyInfo>> {
        lifecycle::list(&self.db, signs).await
    }

    /// Rotates (see [`lifecycle::rotate`]; `force` skips the JWKS max-age wait) and answers with
    /// the keys as they are now, this instance already signing with the new active key.
    ///
    /// # Errors
    /// [`crate::error::Error::NextKeyTooNew`] without `force` while the next key is too new.
    pub async fn rotate(&self, actor: &Actor, force: bool) -> Result<Vec<KeyInfo>> {
        lifecycle::rotate(&self.ctx(), actor, force).await?;
        self.store.reload(&self.db, self.clock.now(), true).await?;
        self.list(Signs::AccessToken).await
    }

    /// Revokes `kid` (a key of access tokens or of ID tokens): out of this instance's JWKS at once,
    /// an event for the others. Answers with the keys of the same kind as they are now.
    ///
    /// # Errors
    /// [`crate::error::Error::NotFound`] for an unknown `kid`.
    pub async fn revoke(&self, kid: &str, actor: &Actor) -> Result<Vec<KeyInfo>> {
        let signs = lifecycle::revoke(&self.ctx(), kid, actor).await?;
        self.store.forget(kid);
        self.store.reload(&self.db, self.clock.now(), true).await?;
        self.list(signs).await
    }

    /// Keeps the key set current (poll every 2 s) and runs scheduled rotation (every minute) until
    /// `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reload = tokio::time::interval(Duration::from_secs(2));
        let mut rotation = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = reload.tick() => {
                    if let Err(e) = self.store.reload(&self.db, self.clock.now(), false).await {
                        tracing::warn!(error = %e, "signing key reload failed");
                    }
                }
                _ = rotation.tick() => match self.rotate_if_due().await {
                    Ok(Some(kid)) => {
                        tracing::info!(%kid, "scheduled signing key rotation");
                        if let Err(e) = self.reload().await {
                            tracing::warn!(error = %e, "signing key reload after a rotation failed");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduled rotation failed"),
                },
            }
        }
    }

    /// Rotates if the schedule says so and this instance wins the lock; the new active kid if it
    /// rotated (see [`lifecycle::rotate_if_due`]).
    pub async fn rotate_if_due(&self) -> Result<Option<String>> {
        lifecycle::rotate_if_due(&self.ctx()).await
    }

    /// Applies a `signing_key` revocation heard from another instance.
    pub fn forget(&self, kid: &str) {
        self.store.forget(kid);
    }

    /// Reloads the key set now (another instance changed the keys).
    pub async fn reload(&self) -> Result<bool> {
        self.store.reload(&self.db, self.clock.now(), true).await
    }
}

/// A revoked signing key leaves this instance's JWKS and verifiers at once.
impl crate::revocation::consumer::EventSink for Signing {
    fn apply(&self, ev: &crate::revocation::RevocationEvent, _max_ttl: i64) {
        if ev.kind != crate::revocation::Kind::SigningKey {
            return;
        }
        self.forget(ev.kid.as_deref().unwrap_or(&ev.id));
        // Revoking the active key promoted its successor in the same transaction: load it now
        // rather than at the next 2 s poll, so this instance is without a signer for milliseconds.
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.reload().await {
                tracing::warn!(error = %e, "signing key reload after a revocation failed");
            }
        });
    }
}

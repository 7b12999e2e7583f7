//! The client service: registration, changes and authentication, with this instance's caches
//! kept in step with every change it commits (other instances follow the change feed).

use std::{net::IpAddr, sync::Arc};

use sqlx::PgPool;

use super::{update, Client, ClientAuth, ClientPatch, CreatedClient, Credentials, NewClient};
use crate::{
    apikeys::ApiKeys,
    audit::Actor,
    clock::Clock,
    config::Config,
    error::{Error, GrantError, Result},
    revocation::{consumer::EventSink, Kind, RevocationEvent, RevokedSet},
    secrets::Keyring,
    throttle::SourceLimiter,
};

/// OAuth clients (RFC 6749 §2): registry and authentication.
#[derive(Clone)]
pub struct Clients {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    /// Keys generated secrets are stored under (HMAC-SHA-256; see [`super::secret`]): new ones
    /// under the current key.
    secret_hmac: Keyring,
    auth: Arc<ClientAuth>,
    guessing: Arc<SourceLimiter>,
    revoked: Arc<RevokedSet>,
    apikeys: ApiKeys,
}

impl Clients {
    /// A service storing generated secrets under `secret_hmac`, authenticating through `auth`
    /// within the per-source allowance of `guessing`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        clock: Clock,
        config: Arc<Config>,
        secret_hmac: Keyring,
        auth: Arc<ClientAuth>,
        guessing: Arc<SourceLimiter>,
        revoked: Arc<RevokedSet>,
        apikeys: ApiKeys,
    ) -> Self {
        Self { db, clock, config, secret_hmac, auth, guessing, revoked, apikeys }
    }

    /// Authenticates a caller at `source` (RFC 6749 §2.3.1; see [`ClientAuth::authenticate`]).
    ///
    /// # Errors
    /// [`GrantError::InvalidClient`] for every failure the caller may not tell apart; `Failed` with
    /// [`Error::TooManyAttempts`] or [`Error::Saturated`] when throttled.
    pub async fn authenticate(&self, creds: &Credentials, source: IpAddr) -> Result<Arc<Client>, GrantError> {
        self.auth.authenticate(&self.db, &self.guessing, creds, source).await
    }

    /// Registers a client; a confidential client's secret is in the result only.
    pub async fn create(&self, new: NewClient, actor: &Actor) -> Result<CreatedClient> {
        let created = super::create(&self.db, self.secret_hmac.current(), new, self.clock.now(), actor).await?;
        // This instance may remember the id as unknown (a failed attempt just before); others do
        // so for at most a few seconds.
        self.auth.forget(&created.client.client_id);
        Ok(created)
    }

    /// Every client.
    pub async fn list(&self) -> Result<Vec<Client>> {
        super::list(&self.db).await
    }

    /// One client, disabled or not.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown id.
    pub async fn get(&self, client_id: &str) -> Result<Client> {
        super::get(&self.db, client_id).await?.ok_or(Error::NotFound("client"))
    }

    /// One enabled client, or `None` for an unknown or disabled one (the sign-in flow's look-up).
    pub async fn get_live(&self, client_id: &str) -> Result<Option<Client>> {
        super::get_live(&self.db, client_id).await
    }

    /// Replaces a confidential client's secret (see [`super::secret::rotate`]); the old one stops
    /// working here at once.
    pub async fn rotate_secret(&self, client_id: &str, actor: &Actor) -> Result<CreatedClient> {
        let managed = self.config.bootstrap_admin_secret.is_some();
        let now = self.clock.now();
        let rotated =
            super::secret::rotate(&self.db, self.secret_hmac.current(), client_id, managed, now, actor).await?;
        self.auth.forget(client_id);
        Ok(rotated)
    }

    /// Disables a client and revokes its refresh tokens and API keys.
    pub async fn disable(&self, client_id: &str, actor: &Actor) -> Result<()> {
        super::disable(&self.db, client_id, self.clock.now(), actor).await?;
        self.revoked.revoke_client(client_id);
        self.auth.forget(client_id);
        self.apikeys.forget_owner(client_id);
        Ok(())
    }

    /// Applies `patch` (see [`update::update`]).
    pub async fn update(&self, client_id: &str, patch: ClientPatch, actor: &Actor) -> Result<Client> {
        let updated = update::update(&self.db, client_id, patch, self.clock.now(), actor).await?;
        self.auth.forget(client_id);
        self.apikeys.forget(&updated.changed_keys);
        Ok(updated.client)
    }
}

/// A disabled client's cached record goes at once.
impl EventSink for ClientAuth {
    fn apply(&self, ev: &RevocationEvent, _max_ttl: i64) {
        if ev.kind == Kind::Client {
            self.forget(&ev.id);
        }
    }
}

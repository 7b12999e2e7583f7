//! The user service: registration, changes, deletion and sign-in, with this instance's caches kept
//! in step with every change it commits (other instances follow the change feed).

use std::{net::IpAddr, sync::Arc};

use sqlx::PgPool;
use uuid::Uuid;

use super::{login, update, NewUser, User, UserPatch, UserView};
use crate::{
    apikeys::ApiKeys, audit::Actor, clock::Clock, config::Config, error::Result, passwords, revocation::RevokedSet,
    throttle::SourceLimiter,
};

/// People who sign in, and whose scopes bound their tokens and API keys.
#[derive(Clone)]
pub struct Users {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    argon2: passwords::Pool,
    guessing: Arc<SourceLimiter>,
    revoked: Arc<RevokedSet>,
    apikeys: ApiKeys,
}

impl Users {
    /// A service hashing and checking passwords on `argon2`, within the per-source allowance of
    /// `guessing`.
    pub fn new(
        db: PgPool,
        clock: Clock,
        config: Arc<Config>,
        argon2: passwords::Pool,
        guessing: Arc<SourceLimiter>,
        revoked: Arc<RevokedSet>,
        apikeys: ApiKeys,
    ) -> Self {
        Self { db, clock, config, argon2, guessing, revoked, apikeys }
    }

    /// Checks a username and password for a caller at `source` (see [`login::authenticate`]):
    /// `None` for every failure the caller may not tell apart.
    ///
    /// # Errors
    /// [`crate::error::Error::TooManyAttempts`] when the source's allowance is spent.
    pub async fn sign_in(&self, source: IpAddr, username: &str, password: &str) -> Result<Option<User>> {
        let guards = login::Guards { config: &self.config, argon2: &self.argon2, guessing: &self.guessing };
        login::authenticate(&self.db, &guards, self.clock.now(), source, username, password).await
    }

    /// Registers a user (password hashed with Argon2id).
    pub async fn create(&self, new: NewUser, actor: &Actor) -> Result<UserView> {
        super::create(&self.db, new, self.clock.now(), actor).await
    }

    /// One user.
    ///
    /// # Errors
    /// [`crate::error::Error::NotFound`] for an unknown or deleted user.
    pub async fn get(&self, id: Uuid) -> Result<UserView> {
        super::get(&self.db, id).await
    }

    /// Live users in id order after `after`, at most `limit`, optionally the one named `username`.
    pub async fn list(&self, username: Option<&str>, after: Option<Uuid>, limit: i64) -> Result<Vec<UserView>> {
        super::list(&self.db, username, after, limit).await
    }

    /// The id of the live user named `username`.
    ///
    /// # Errors
    /// [`crate::error::Error::NotFound`] when there is none.
    pub async fn id_of(&self, username: &str) -> Result<Uuid> {
        super::id_of(&self.db, username).await
    }

    /// Deletes a user, revoking their refresh tokens and API keys (here at once).
    pub async fn delete(&self, id: Uuid, actor: &Actor) -> Result<()> {
        let keys = super::delete(&self.db, id, self.clock.now(), actor).await?;
        self.revoked.revoke_user(&id.to_string());
        self.apikeys.forget(&keys);
        Ok(())
    }

    /// Applies `patch` (see [`update::update`]).
    pub async fn update(&self, id: Uuid, patch: UserPatch, actor: &Actor) -> Result<UserView> {
        let updated = update::update(&self.db, id, patch, self.clock.now(), actor).await?;
        self.apikeys.forget(&updated.changed_keys);
        Ok(updated.user)
    }
}

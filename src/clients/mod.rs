//! OAuth clients: registration, listing, disabling, and the bootstrap `admin` client.

pub mod auth;
pub mod bootstrap;
pub mod redirects;
pub mod secret;
mod service;
pub mod update;
mod validate;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::{
    apikeys,
    audit::{self, Actor},
    error::{Error, Result},
    revocation::{self, Kind, NewRevocation},
    secrets,
};

pub use auth::{ClientAuth, Credentials};
pub use bootstrap::ensure_admin;
pub use service::Clients;
pub use update::ClientPatch;
pub use validate::valid_client_id;
use validate::{refuse_user_id, validate};

pub use crate::config::MAX_CLIENT_ACCESS_TTL;
/// The grant types a client may be registered for.
pub const GRANT_TYPES: [&str; 4] = ["authorization_code", "client_credentials", "password", "refresh_token"];

/// One audience or several, as given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[schema(example = "https://api.example.com")]
#[serde(untagged)]
pub enum AudienceParam {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl AudienceParam {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
    fn from_vec(mut v: Vec<String>) -> Option<Self> {
        match v.len() {
            0 => None,
            1 => v.pop().map(Self::One),
            _ => Some(Self::Many(v)),
        }
    }
}

/// `POST /v1/admin/clients` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "Billing service",
    "grant_types": ["client_credentials"],
    "scopes": ["introspect", "keys:verify"],
    "audience": ["https://api.example.com", "https://billing.example.com"],
    "public": false,
    "access_token_ttl": 900
}))]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    /// Chosen id; a UUID v7 is generated when absent.
    pub client_id: Option<String>,
    /// Display name.
    pub name: String,
    /// Allowed grants: `authorization_code`, `client_credentials`, `password` (legacy), `refresh_token`.
    pub grant_types: Vec<String>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// Default audience of its tokens (one or several).
    pub audience: Option<AudienceParam>,
    /// A public client has no secret and cannot use `client_credentials`.
    #[serde(default)]
    pub public: bool,
    /// Access-token lifetime in seconds (default: the service's).
    pub access_token_ttl: Option<i64>,
    /// Refresh-token idle lifetime in seconds (default: the service's).
    pub refresh_token_ttl: Option<i64>,
    /// Scopes the client may put on API keys: absent or null = any scope that is not reserved, a
    /// list = only those, `[]` = none. Never a reserved scope (400 `SCOPE_RESERVED`).
    #[serde(default)]
    pub key_scopes: Option<Vec<String>>,
    /// Where the client may send a browser after authorisation: absolute https URIs (http only to a
    /// loopback host), no fragment; at most 20.
    #[serde(default)]
    pub redirect_uris: Option<Vec<String>>,
    /// Where the client may send a browser after sign-out; the same rules.
    #[serde(default)]
    pub post_logout_redirect_uris: Option<Vec<String>>,
}

/// A client as stored (without its secret hash when shown).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "client_id": "01a19bc6-9448-7a57-9b38-8164a6fddbf4",
    "name": "Mobile app",
    "grant_types": ["password", "refresh_token"],
    "scopes": ["keys:read", "keys:write"],
    "audience": "https://api.example.com",
    "public": true,
    "access_token_ttl": null,
    "refresh_token_ttl": 1209600,
    "created_at": "2026-11-02T10:20:45Z",
    "disabled_at": null,
    "key_scopes": null,
    "redirect_uris": ["https://app.example.com/callback", "http://127.0.0.1:8400/callback"],
    "post_logout_redirect_uris": ["https://app.example.com/"]
}))]
pub struct Client {
    /// Client id.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Allowed grants.
    pub grant_types: Vec<String>,
    /// Allowed scopes.
    pub scopes: Vec<String>,
    /// Default audience.
    pub audience: Option<AudienceParam>,
    /// Public (no secret).
    pub public: bool,
    /// Access-token lifetime override.
    pub access_token_ttl: Option<i32>,
    /// Refresh-token idle lifetime override.
    pub refresh_token_ttl: Option<i32>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Disabled, when it is.
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// Scopes the client may put on API keys: null = any scope that is not reserved, `[]` = none.
    pub key_scopes: Option<Vec<String>>,
    /// Registered redirect URIs (normalised).
    pub redirect_uris: Vec<String>,
    /// Registered post-logout redirect URIs (normalised).
    pub post_logout_redirect_uris: Vec<String>,
    /// Stored secret: a keyed hash (generated secrets) or an Argon2id PHC string; never serialised.
    #[serde(skip)]
    pub secret_hash: Option<String>,
}

impl Client {
    /// Whether the client may use `grant`.
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }
    /// The configured audiences.
    pub fn audiences(&self) -> Vec<String> {
        match &self.audience {
            None => Vec::new(),
            Some(a) => a.clone().into_vec(),
        }
    }
}

/// A just-created client with its secret, shown this once. `Debug` leaves the secret out.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "client_id": "01a1eef7-0eb8-7085-bb04-92689d188042",
    "name": "Billing service",
    "grant_types": ["client_credentials"],
    "scopes": ["introspect", "keys:verify"],
    "audience": ["https://api.example.com", "https://billing.example.com"],
    "public": false,
    "access_token_ttl": 900,
    "refresh_token_ttl": null,
    "created_at": "2026-11-18T14:02:11Z",
    "disabled_at": null,
    "key_scopes": ["payments:read"],
    "redirect_uris": [],
    "post_logout_redirect_uris": [],
    "client_secret": "EXAMPLE-K7gNU3sdo-OL0wNhqoVWhr3g6s1xYv72ol_"
}))]
pub struct CreatedClient {
    /// The client.
    #[serde(flatten)]
    pub client: Client,
    /// The secret of a confidential client. Shown once, stored only as a keyed hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for CreatedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedClient")
            .field("client", &self.client)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

type ClientRow = (
    String,
    String,
    Option<String>,
    bool,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Option<i32>,
    Option<i32>,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<Vec<String>>,
    Vec<String>,
    Vec<String>,
);

const COLUMNS: &str = "client_id, name, secret_hash, public, grant_types, scopes, audience, access_token_ttl, refresh_token_ttl, created_at, disabled_at, key_scopes, redirect_uris, post_logout_redirect_uris";

fn from_row(r: ClientRow) -> Client {
    Client {
        client_id: r.0,
        name: r.1,
        secret_hash: r.2,
        public: r.3,
        grant_types: r.4,
        scopes: r.5,
        audience: AudienceParam::from_vec(r.6),
        access_token_ttl: r.7,
        refresh_token_ttl: r.8,
        created_at: r.9,
        disabled_at: r.10,
        key_scopes: r.11,
        redirect_uris: r.12,
        post_logout_redirect_uris: r.13,
    }
}

/// Registers a client. A confidential client gets a 256-bit secret, returned here once and
/// stored as a keyed hash under `secret_key` (see [`secret`]).
pub async fn create(
    db: &PgPool,
    secret_key: &crate::secrets::VersionedKey,
    new: NewClient,
    now: OffsetDateTime,
    actor: &Actor,
) -> Result<CreatedClient> {
    let (client_id, new, grants, scopes) = validate(new)?;
    let secret = (!new.public).then(|| secrets::random_urlsafe(32));
    let secret_hash = secret.as_ref().map(|s| secret::keyed(secret_key, &client_id, s));
    let audience = new.audience.clone().map(AudienceParam::into_vec).unwrap_or_default();
    let mut tx = db.begin().await?;
    refuse_user_id(&mut tx, &client_id).await?;
    let inserted = sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, public, grant_types, scopes, audience, access_token_ttl, refresh_token_ttl, created_at, key_scopes, redirect_uris, post_logout_redirect_uris)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(&client_id)
    .bind(&new.name)
    .bind(&secret_hash)
    .bind(new.public)
    .bind(&grants)
    .bind(&scopes)
    .bind(&audience)
    .bind(new.access_token_ttl.map(|t| t as i32))
    .bind(new.refresh_token_ttl.map(|t| t as i32))
    .bind(now)
    .bind(&new.key_scopes)
    .bind(new.redirect_uris.as_deref().unwrap_or_default())
    .bind(new.post_logout_redirect_uris.as_deref().unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(Error::Conflict(format!("a client with client_id {client_id:?} already exists")));
    }
    audit::record(
        &mut tx,
        now,
        actor,
        "client.create",
        "client",
        &client_id,
        json!({"name": new.name, "scopes": scopes, "key_scopes": new.key_scopes}),
    )
    .await?;
    tx.commit().await?;
    let client = Client {
        client_id,
        name: new.name,
        grant_types: grants,
        scopes,
        audience: AudienceParam::from_vec(audience),
        public: new.public,
        access_token_ttl: new.access_token_ttl.map(|t| t as i32),
        refresh_token_ttl: new.refresh_token_ttl.map(|t| t as i32),
        created_at: now,
        disabled_at: None,
        key_scopes: new.key_scopes,
        redirect_uris: new.redirect_uris.unwrap_or_default(),
        post_logout_redirect_uris: new.post_logout_redirect_uris.unwrap_or_default(),
        secret_hash,
    };
    Ok(CreatedClient { client, client_secret: secret })
}

/// One client, disabled or not.
pub async fn get(db: &PgPool, client_id: &str) -> Result<Option<Client>> {
    let row: Option<ClientRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients WHERE client_id = $1"))
        .bind(client_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(from_row))
}

/// One enabled client (the sign-in flow's look-up: a disabled client is as good as unknown).
pub async fn get_live(db: &PgPool, client_id: &str) -> Result<Option<Client>> {
    Ok(get(db, client_id).await?.filter(|c| c.disabled_at.is_none()))
}

/// Every client, oldest first.
pub async fn list(db: &PgPool) -> Result<Vec<Client>> {
    let rows: Vec<ClientRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM clients ORDER BY created_at, client_id")).fetch_all(db).await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Disables a client and revokes its refresh tokens and API keys; its access tokens become inactive too.
pub async fn disable(db: &PgPool, client_id: &str, now: OffsetDateTime, actor: &Actor) -> Result<()> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query("UPDATE clients SET disabled_at = $2 WHERE client_id = $1 AND disabled_at IS NULL")
        .bind(client_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM clients WHERE client_id = $1)")
            .bind(client_id)
            .fetch_one(&mut *tx)
            .await?;
        return if exists { Ok(()) } else { Err(Error::NotFound("client")) };
    }
    let families: Vec<(uuid::Uuid, OffsetDateTime)> = sqlx::query_as(
        "UPDATE refresh_families SET revoked_at = $2, revoked_reason = 'client disabled' WHERE client_id = $1 AND revoked_at IS NULL
         RETURNING id, absolute_expires_at",
    )
    .bind(client_id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    revocation::record(&mut tx, &NewRevocation::new(Kind::Client, client_id, now).reason("client disabled")).await?;
    // Services that track sessions by `sid` learn of each family, as for any other family revocation.
    revocation::record_families(&mut tx, &families, now, "client disabled").await?;
    // Its API keys are revoked with it, as a deleted user's are: refused everywhere, for good.
    let keys = apikeys::store::revoke_owned(&mut tx, client_id, now, "owner disabled").await?;
    let events: Vec<(String, Option<OffsetDateTime>)> = keys.iter().map(|(id, exp)| (id.to_string(), *exp)).collect();
    revocation::record_all(&mut tx, Kind::ApiKey, &events, now, "owner disabled").await?;
    let ids: Vec<uuid::Uuid> = keys.iter().map(|(id, _)| *id).collect();
    crate::webhooks::events::api_keys_revoked(&mut tx, &ids, now, "owner disabled").await?;
    let details = json!({"refresh_families_revoked": families.len(), "api_keys_revoked": keys.len()});
    audit::record(&mut tx, now, actor, "client.disable", "client", client_id, details).await?;
    tx.commit().await?;
    crate::metrics::revocation("client");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_created_client_leaves_out_its_secret() {
        let client = Client {
            client_id: "c".into(),
            name: "n".into(),
            grant_types: vec!["client_credentials".into()],
            scopes: vec![],
            audience: None,
            public: false,
            access_token_ttl: None,
            refresh_token_ttl: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            disabled_at: None,
            key_scopes: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            secret_hash: None,
        };
        let created = CreatedClient { client, client_secret: Some("s3cr3t-value".into()) };
        let shown = format!("{created:?}");
        assert!(!shown.contains("s3cr3t-value") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn client_ids_are_unreserved_characters_only() {
        assert!(validate::valid_client_id("svc.billing_v2~east-1"));
        for bad in ["", "svc:billing", "has space", "é", &"x".repeat(129)] {
            assert!(!validate::valid_client_id(bad), "{bad:?}");
        }
    }
}

//! The portal's own OAuth client, `tessera-portal`, ensured at start like the bootstrap admin.

use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::{
    audit::{self, Actor},
    error::Result,
};

/// The portal's client id.
pub const CLIENT_ID: &str = "tessera-portal";

/// The scopes the portal asks for. `admin` is granted only to users who hold it themselves (the
/// code grant keeps the user's scopes only), so a developer's session never carries it.
pub const SCOPES: [&str; 5] = ["openid", "keys:read", "keys:write", "keys:verify", "admin"];

/// The portal's redirect URI under `issuer`.
pub fn redirect_uri(issuer: &str) -> String {
    format!("{}/portal/callback", issuer.trim_end_matches('/'))
}

/// Where `/oauth/logout` sends the browser after the portal's sign-out.
pub fn signed_out_uri(issuer: &str) -> String {
    format!("{}/portal/signed-out", issuer.trim_end_matches('/'))
}

/// Creates the public client `tessera-portal`, or puts its redirect URIs, grants and scopes back
/// to what the portal needs (the issuer may have changed since the last start). Idempotent, so
/// instances starting together may race here.
///
/// # Errors
/// Database errors.
pub async fn ensure_client(db: &PgPool, issuer: &str, now: OffsetDateTime) -> Result<()> {
    let scopes: Vec<String> = SCOPES.iter().map(|s| (*s).to_owned()).collect();
    let redirects = vec![redirect_uri(issuer)];
    let logouts = vec![signed_out_uri(issuer)];
    let mut tx = db.begin().await?;
    let created = sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, public, grant_types, scopes, created_at,
                              redirect_uris, post_logout_redirect_uris)
         VALUES ($1, 'Developer portal', NULL, true, '{authorization_code,refresh_token}', $2, $3, $4, $5)
         ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(CLIENT_ID)
    .bind(&scopes)
    .bind(now)
    .bind(&redirects)
    .bind(&logouts)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if created > 0 {
        let details = json!({"source": "built-in developer portal"});
        audit::record(&mut tx, now, &Actor::system(), "client.portal_create", "client", CLIENT_ID, details).await?;
    } else {
        // Keeps an operator's disabling; fixes only what the portal cannot work without.
        sqlx::query(
            "UPDATE clients SET redirect_uris = $2, post_logout_redirect_uris = $3, public = true,
                    secret_hash = NULL, grant_types = '{authorization_code,refresh_token}', scopes = $4
             WHERE client_id = $1 AND (redirect_uris <> $2 OR post_logout_redirect_uris <> $3 OR scopes <> $4
                    OR NOT public)",
        )
        .bind(CLIENT_ID)
        .bind(&redirects)
        .bind(&logouts)
        .bind(&scopes)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

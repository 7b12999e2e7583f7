//! The bootstrap client `admin` (`TESSERA_BOOTSTRAP_ADMIN_SECRET`): created at start when missing,
//! its secret replaced when the variable changes, and never re-enabled behind an operator's back.

use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::get;
use crate::{
    audit::{self, Actor},
    error::Result,
    passwords, scopes,
    secrets::Secret,
};

/// Makes sure the confidential client `admin` exists with `secret`, grant `client_credentials`
/// and scope `admin` (start-up, `TESSERA_BOOTSTRAP_ADMIN_SECRET`).
pub async fn ensure_admin(db: &PgPool, secret: &Secret, now: OffsetDateTime) -> Result<()> {
    if let Some(existing) = get(db, "admin").await? {
        let current = existing.secret_hash.clone();
        let same = match current {
            Some(h) => passwords::verify(Some(h), secret.expose().to_owned()).await?,
            None => false,
        };
        // An operator who disabled `admin` (after a leak, say) must not see a restart undo it. The
        // way back is a new secret, which is what a leak calls for anyway.
        if same && existing.disabled_at.is_some() {
            tracing::warn!(
                "the bootstrap admin client `admin` is disabled and stays disabled: \
                 TESSERA_BOOTSTRAP_ADMIN_SECRET still holds the secret it had. Set a new secret to \
                 re-enable it, or unset the variable"
            );
            return Ok(());
        }
        if same && existing.scopes.iter().any(|s| s == scopes::ADMIN) {
            return Ok(());
        }
        if existing.disabled_at.is_some() {
            // Instances already running keep refusing it until they restart: their revoked set
            // holds the client from when it was disabled.
            tracing::warn!(
                "the bootstrap admin client `admin` was disabled; a new TESSERA_BOOTSTRAP_ADMIN_SECRET \
                 re-enables it (restart every instance for all of them to accept it)"
            );
        }
        let hash = passwords::hash(secret.expose().to_owned()).await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "UPDATE clients SET secret_hash = $1, public = false, disabled_at = NULL,
                    scopes = CASE WHEN 'admin' = ANY(scopes) THEN scopes ELSE array_append(scopes, 'admin') END,
                    grant_types = CASE WHEN 'client_credentials' = ANY(grant_types) THEN grant_types ELSE array_append(grant_types, 'client_credentials') END
             WHERE client_id = 'admin'",
        )
        .bind(hash)
        .execute(&mut *tx)
        .await?;
        let details = json!({"source": "TESSERA_BOOTSTRAP_ADMIN_SECRET", "secret_changed": !same});
        audit::record(&mut tx, now, &Actor::system(), "client.bootstrap_update", "client", "admin", details).await?;
        tx.commit().await?;
        tracing::info!("bootstrap admin client updated");
        return Ok(());
    }
    let hash = passwords::hash(secret.expose().to_owned()).await?;
    let mut tx = db.begin().await?;
    let created = sqlx::query(
        "INSERT INTO clients (client_id, name, secret_hash, public, grant_types, scopes, created_at)
         VALUES ('admin', 'Bootstrap admin', $1, false, '{client_credentials}', '{admin}', $2) ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(hash)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if created > 0 {
        let details = json!({"source": "TESSERA_BOOTSTRAP_ADMIN_SECRET"});
        audit::record(&mut tx, now, &Actor::system(), "client.bootstrap_create", "client", "admin", details).await?;
    }
    tx.commit().await?;
    // Instances started together race here; the insert is idempotent, and only the one that
    // created the client says so.
    if created > 0 {
        tracing::info!("bootstrap admin client created");
    } else {
        tracing::info!("bootstrap admin client created meanwhile by another instance");
    }
    Ok(())
}

//! The RS256 key that signs ID tokens. OpenID Connect Core §15.1 makes RS256 the algorithm every
//! relying party supports, so ID tokens are always RS256 while access tokens use
//! `TESSERA_SIGNING_ALG`. The key is made once (under the signing-key advisory lock, so two
//! instances starting together make one), sealed under the master key like the others, and
//! published in the JWKS next to the access-token keys. It is kept out of the access-token
//! verifiers: a token it signed is never accepted as an access token.

use sqlx::PgPool;
use time::OffsetDateTime;

use super::{lifecycle::SIGNING_LOCK, material};
use crate::{
    config::SigningAlg,
    error::{Error, Result},
    secrets::Sealer,
};

/// The stored key: kid, sealed PKCS#8 and public JWK.
pub type IdKeyRow = (String, Vec<u8>, serde_json::Value);

/// Makes sure an ID-token key exists.
pub async fn ensure(db: &PgPool, sealer: &Sealer, now: OffsetDateTime) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(SIGNING_LOCK).execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM id_token_keys)").fetch_one(&mut *tx).await?;
    if !exists {
        // RSA generation takes a while: keep it off the async workers.
        let generated = tokio::task::spawn_blocking(|| material::generate(SigningAlg::Rs256))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let sealed = sealer.seal(generated.kid.as_bytes(), &generated.pkcs8);
        sqlx::query("INSERT INTO id_token_keys (kid, private_key_enc, public_jwk, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&generated.kid)
            .bind(sealed)
            .bind(&generated.jwk)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The newest ID-token key, if one was made.
pub async fn load(db: &PgPool) -> Result<Option<IdKeyRow>> {
    Ok(sqlx::query_as("SELECT kid, private_key_enc, public_jwk FROM id_token_keys ORDER BY created_at DESC LIMIT 1")
        .fetch_optional(db)
        .await?)
}

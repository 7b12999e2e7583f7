//! The RS256 keys that sign ID tokens. OpenID Connect Core §15.1 makes RS256 the algorithm every
//! relying party supports, so ID tokens are always RS256 while access tokens use
//! `TESSERA_SIGNING_ALG`. The keys are sealed under the master key like the others, published in
//! the JWKS next to the access-token keys, and kept out of the access-token verifiers: a token they
//! signed is never accepted as an access token.
//!
//! They follow the access-token keys' lifecycle, `next → active → retired`, and move with them:
//! every rotation of the access-token keys, scheduled or asked for, rotates these in the same
//! transaction. The next key is published at least `TESSERA_JWKS_MAX_AGE` before it signs (a
//! scheduled rotation waits for both next keys), and a retired key stays published as long as the
//! ID tokens it signed live, so a relying party that cached the JWKS never meets an unknown `kid`.
//! The lifecycle's SQL (module `key_table`) is shared with the access-token keys.

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::error::Result;

/// A published key: kid, state (`next`, `active` or `retired`), sealed PKCS#8 and public JWK.
pub type IdKeyRow = (String, String, Vec<u8>, serde_json::Value);

/// The published keys (next, active, and retired ones still within `publish_until`), the active
/// one first, then the next, then the retired, newest first.
pub async fn load(db: &PgPool, now: OffsetDateTime) -> Result<Vec<IdKeyRow>> {
    Ok(sqlx::query_as(
        "SELECT kid, state, private_key_enc, public_jwk FROM id_token_signing_keys
         WHERE state IN ('next', 'active') OR (state = 'retired' AND publish_until > $1)
         ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, created_at DESC",
    )
    .bind(now)
    .fetch_all(db)
    .await?)
}

//! RFC 7009 revocation. A refresh token revokes its family; an access token has its `jti` revoked
//! until it would expire. A client can only revoke its own tokens; anything else is ignored
//! silently, so the answer never reveals whether a token exists.

use uuid::Uuid;

use crate::{
    clients::Client,
    error::Error,
    revocation::{self, Kind, NewRevocation},
    tokens::{jwt, refresh, Tokens},
};

impl Tokens {
    /// Revokes `token` if it belongs to `client`.
    pub async fn revoke(&self, client: &Client, token: &str, _hint: Option<&str>) -> Result<(), Error> {
        let now = self.clock.now();
        if refresh::is_well_formed(token) {
            let hash = self.hash_of(token);
            let mut family: Option<Uuid> = None;
            for h in &hash {
                family = sqlx::query_scalar(
                    "SELECT f.id FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
                 WHERE t.token_hash = $1 AND f.client_id = $2",
                )
                .bind(h)
                .bind(&client.client_id)
                .fetch_optional(&self.db)
                .await?;
                if family.is_some() {
                    break;
                }
            }
            if let Some(family) = family {
                self.revoke_family(family, now, "revoked by client").await?;
            }
            return Ok(());
        }
        let keys = self.signing.keys();
        let Ok(claims) = jwt::verify(&keys, token, &self.config.issuer, now.unix_timestamp()) else {
            return Ok(());
        };
        if claims.client_id != client.client_id {
            return Ok(());
        }
        let Ok(jti) = Uuid::parse_str(&claims.jti) else {
            return Ok(());
        };
        let exp = time::OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|e| Error::Internal(e.to_string()))?;
        let mut tx = self.db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO revoked_jtis (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(exp)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted > 0 {
            let mut ev =
                NewRevocation::new(Kind::AccessToken, claims.jti.clone(), now).expires(exp).reason("revoked by client");
            ev.jti = Some(claims.jti.clone());
            revocation::record(&mut tx, &ev).await?;
        }
        tx.commit().await?;
        self.revoked.revoke_jti(jti, claims.exp);
        if inserted > 0 {
            crate::metrics::revocation("access_token");
        }
        Ok(())
    }
}

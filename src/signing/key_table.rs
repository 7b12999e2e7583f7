//! One table of keys with the `next → active → retired` lifecycle (and `revoked`), as SQL. There are two: the
//! access-token keys (`signing_keys`, `TESSERA_SIGNING_ALG`) and the ID-token keys
//! (`id_token_signing_keys`, always RS256; see [`super::id_token_key`]). Both move through the
//! same steps in the same transactions ([`super::lifecycle`]); every function here runs under
//! the caller's signing-key advisory lock.

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;

use super::{
    lifecycle::{Ctx, KeyInfo},
    material,
};
use crate::{
    config::SigningAlg,
    error::{Error, Result},
};

// Also which table holds the key: `signing_keys` or `id_token_signing_keys` (see `name`).
/// What a signing key signs, as the admin API names it (`signs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(example = "id_token")]
pub enum Signs {
    /// Access tokens (RFC 9068), with `TESSERA_SIGNING_ALG`.
    #[default]
    AccessToken,
    /// OpenID Connect ID tokens, always RS256.
    IdToken,
}

/// As the `signs` column of [`Signs::list`] holds it.
impl TryFrom<String> for Signs {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "access_token" => Ok(Self::AccessToken),
            "id_token" => Ok(Self::IdToken),
            _ => Err(format!("not a kind of signing key: {s}")),
        }
    }
}

/// Each kind of key has its own table: the SQL below is the same for both, on that table.
impl Signs {
    /// Both kinds, access tokens first.
    pub const ALL: [Self; 2] = [Self::AccessToken, Self::IdToken];

    fn name(self) -> &'static str {
        match self {
            Self::AccessToken => "signing_keys",
            Self::IdToken => "id_token_signing_keys",
        }
    }

    /// `template` with `{t}` replaced by the table's name (a constant, never input).
    fn sql(self, template: &str) -> String {
        template.replace("{t}", self.name())
    }

    /// Every key of the table, newest first, as the admin API shows them (no private part).
    pub(super) async fn list(self, db: &PgPool) -> Result<Vec<KeyInfo>> {
        // Only the access-token table records the algorithm: ID-token keys are all RS256.
        let (alg, signs) = match self {
            Self::AccessToken => ("alg", "access_token"),
            Self::IdToken => ("'RS256'", "id_token"),
        };
        let sql = self.sql(&format!(
            "SELECT kid, {alg} AS alg, state, created_at, activated_at, retired_at, revoked_at, '{signs}' AS signs
             FROM {{t}} ORDER BY created_at DESC, kid"
        ));
        Ok(sqlx::query_as(&sql).fetch_all(db).await?)
    }

    /// The state of `kid`, when the table holds it.
    pub(super) async fn state_of(self, conn: &mut PgConnection, kid: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(&self.sql("SELECT state FROM {t} WHERE kid = $1")).bind(kid).fetch_optional(conn).await?)
    }

    /// Marks `kid` revoked: it leaves the JWKS at the next reload of every instance.
    pub(super) async fn revoke(self, conn: &mut PgConnection, kid: &str, now: OffsetDateTime) -> Result<()> {
        sqlx::query(&self.sql("UPDATE {t} SET state = 'revoked', revoked_at = $2 WHERE kid = $1"))
            .bind(kid)
            .bind(now)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Makes, seals and stores a key in `state`; returns its kid.
    pub(super) async fn insert(self, conn: &mut PgConnection, ctx: &Ctx<'_>, state: &str) -> Result<String> {
        let alg = match self {
            Self::AccessToken => ctx.config.signing_alg,
            Self::IdToken => SigningAlg::Rs256,
        };
        // RSA generation takes a while: keep it off the async workers.
        let generated = tokio::task::spawn_blocking(move || material::generate(alg))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let sealed = ctx.sealer.seal(generated.kid.as_bytes(), &generated.pkcs8);
        // Only the access-token table records the algorithm: ID-token keys are all RS256.
        let sql = match self {
            Self::AccessToken => {
                "INSERT INTO signing_keys (kid, state, private_key_enc, public_jwk, created_at, activated_at, alg)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $2 = 'active' THEN $5 END, $6)"
            }
            Self::IdToken => {
                "INSERT INTO id_token_signing_keys (kid, state, private_key_enc, public_jwk, created_at, activated_at)
                 VALUES ($1, $2, $3, $4, $5, CASE WHEN $2 = 'active' THEN $5 END)"
            }
        };
        let mut query =
            sqlx::query(sql).bind(&generated.kid).bind(state).bind(sealed).bind(&generated.jwk).bind(ctx.now);
        if self == Self::AccessToken {
            query = query.bind(alg.as_str());
        }
        query.execute(conn).await?;
        Ok(generated.kid)
    }

    /// Whether a key is in `state`.
    pub(super) async fn has(self, conn: &mut PgConnection, state: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(&self.sql("SELECT EXISTS (SELECT 1 FROM {t} WHERE state = $1)"))
            .bind(state)
            .fetch_one(conn)
            .await?)
    }

    /// The next key becomes the active one.
    async fn promote_next(self, conn: &mut PgConnection, now: OffsetDateTime) -> Result<()> {
        sqlx::query(&self.sql("UPDATE {t} SET state = 'active', activated_at = $1 WHERE state = 'next'"))
            .bind(now)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Makes sure an active and a next key exist (first start, after a revocation, or a database
    /// from before the table rotated): a next key is promoted before a new active one is made.
    pub(super) async fn ensure(self, conn: &mut PgConnection, ctx: &Ctx<'_>) -> Result<()> {
        if !self.has(conn, "active").await? {
            if self.has(conn, "next").await? {
                self.promote_next(conn, ctx.now).await?;
            } else {
                self.insert(conn, ctx, "active").await?;
            }
        }
        if !self.has(conn, "next").await? {
            self.insert(conn, ctx, "next").await?;
        }
        Ok(())
    }

    /// When the next key was published, if there is one.
    pub(super) async fn next_published_at(self, conn: &mut PgConnection) -> Result<Option<OffsetDateTime>> {
        Ok(sqlx::query_scalar(&self.sql("SELECT created_at FROM {t} WHERE state = 'next'"))
            .fetch_optional(conn)
            .await?)
    }

    /// The next key becomes active, the active one retires (published until `publish_until`, when
    /// the last token it signed has expired), and a new next key is made. Returns the new active kid.
    pub(super) async fn rotate(
        self,
        conn: &mut PgConnection,
        ctx: &Ctx<'_>,
        publish_until: OffsetDateTime,
    ) -> Result<String> {
        sqlx::query(
            &self.sql("UPDATE {t} SET state = 'retired', retired_at = $1, publish_until = $2 WHERE state = 'active'"),
        )
        .bind(ctx.now)
        .bind(publish_until)
        .execute(&mut *conn)
        .await?;
        if !self.has(conn, "next").await? {
            self.insert(conn, ctx, "next").await?;
        }
        self.promote_next(conn, ctx.now).await?;
        self.insert(conn, ctx, "next").await?;
        Ok(sqlx::query_scalar(&self.sql("SELECT kid FROM {t} WHERE state = 'active'")).fetch_one(&mut *conn).await?)
    }
}

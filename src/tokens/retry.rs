//! Retry, not reuse: a client that lost the answer to a refresh and presents the spent token again
//! gets the answer it lost — the same successor, and a new access token for the same grant —
//! instead of having its login revoked.
//!
//! A presentation of a spent token is a *retry* when it comes from the client the token was issued
//! to, asks for the same `scope` as the request that spent it, within
//! `TESSERA_REFRESH_RETRY_GRACE` of the spend, while the successor has not yet been presented and
//! the family is live. Anything else is reuse (see [`super::refresh`]).
//!
//! The successor's plaintext is never stored: it is derived from the spent token under a key of
//! the master key's ([`Tokens::successor_of`]), so only a caller who holds the spent token can
//! obtain it, and only the server can compute it. Exactly one rotation ever happens per token (the
//! spend is a conditional UPDATE); retries only count themselves on the spent row.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{refresh::Issued, TokenResponse, Tokens};
use crate::{
    clients::Client,
    error::{Error, GrantError},
};

type Retried = (Uuid, Uuid, Vec<String>, Vec<String>);

impl Tokens {
    /// The answer to a retry of the rotation that spent `presented` (hash `hash`), or `None` when
    /// this presentation is not a retry. `asked` is the request's scope, sorted and deduplicated;
    /// `requested` as given.
    pub(super) async fn retry(
        &self,
        client: &Client,
        presented: &str,
        hash: &[Vec<u8>],
        asked: Option<&[String]>,
        requested: Option<Vec<String>>,
        now: OffsetDateTime,
    ) -> Result<Option<TokenResponse>, GrantError> {
        let grace = self.config.refresh_retry_grace;
        if grace.is_zero() {
            return Ok(None);
        }
        let grace = time::Duration::try_from(grace).map_err(|e| Error::Internal(e.to_string()))?;
        let (successor, successor_hash) = self.successor_of(presented);
        // One statement: the spent row, its live family and user, and its successor — the one
        // derived from this very token, not yet presented and not expired — or nothing.
        let mut retried: Option<Retried> = None;
        for h in hash {
            retried = sqlx::query_as(
                "UPDATE refresh_tokens t SET retries = t.retries + 1
             FROM refresh_families f, users u, refresh_tokens s
             WHERE t.token_hash = $1 AND t.spent_at IS NOT NULL AND t.spent_at >= $2 - $3::interval
               AND t.spent_scopes IS NOT DISTINCT FROM $4::text[]
               AND f.id = t.family_id AND f.client_id = $5 AND f.revoked_at IS NULL AND f.absolute_expires_at > $2
               AND u.id = f.user_id AND u.deleted_at IS NULL
               AND s.token_hash = $6 AND s.family_id = t.family_id AND s.generation = t.generation + 1
               AND s.spent_at IS NULL AND s.expires_at > $2
             RETURNING f.id, f.user_id, s.scopes, u.scopes",
            )
            .bind(h)
            .bind(now)
            .bind(grace)
            .bind(asked)
            .bind(&client.client_id)
            .bind(&successor_hash[..])
            .fetch_optional(&self.db)
            .await?;
            if retried.is_some() {
                break;
            }
        }
        let Some((family, user_id, token_scopes, user_scopes)) = retried else {
            return Ok(None);
        };
        tracing::info!(family_id = %family, client_id = %client.client_id, "refresh token retried within the grace");
        crate::metrics::refresh_retry();
        let issued = Issued { family, user_id, token_scopes, user_scopes };
        self.answer(client, issued, requested, successor).map(Some)
    }
}

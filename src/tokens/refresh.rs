//! Refresh tokens: opaque `tsr_` strings, stored only as HMAC-SHA-256. Each login starts a family;
//! each rotation spends the presented token and issues its successor in one transaction, with a
//! conditional UPDATE — never read-then-write — so of concurrent presentations exactly one wins.
//! A spent token presented again is reuse — the whole family is revoked — unless it is a retry of
//! the request that spent it (see [`super::retry`]).

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    clients::Client,
    error::{Error, GrantError},
    revocation::{self, Kind, NewRevocation},
    scopes, secrets,
    tokens::{Grant, TokenResponse, Tokens},
    usage::anomalies::{self, NewAnomaly},
    webhooks::{Event, EventType},
};

/// Prefix of every refresh token.
pub const PREFIX: &str = "tsr_";
/// Random base62 characters after the prefix (43 × log2(62) ≈ 256 bits).
pub const BODY_LEN: usize = 43;

impl Tokens {
    /// A new token and its keyed hash.
    fn generate(&self) -> (String, [u8; 32]) {
        let token = format!("{PREFIX}{}", secrets::random_base62(BODY_LEN));
        let hash = self.refresh_hmac.current().hash(token.as_bytes());
        (token, hash)
    }

    /// The successor of `presented` and its keyed hash: derived from the presented token under a
    /// key of the master key's, never stored, so a retried rotation can answer with the same one.
    pub(super) fn successor_of(&self, presented: &str) -> (String, [u8; 32]) {
        let body = secrets::derived_base62(&self.refresh_successor, presented.as_bytes(), BODY_LEN);
        let token = format!("{PREFIX}{body}");
        let hash = self.refresh_hmac.current().hash(token.as_bytes());
        (token, hash)
    }

    /// The keyed hashes a presented token may be stored under: under the current HMAC key and,
    /// during a change of secret, the previous one. Each query matches one hash with
    /// `token_hash = $1` and is run again for the next only when nothing matched: with
    /// `= ANY($1)` Postgres's generic plan may drive the join from the client's families instead of
    /// the unique token index, one scan of every family of the client per rotation.
    pub fn hash_of(&self, token: &str) -> Vec<Vec<u8>> {
        self.refresh_hmac.hashes(token.as_bytes()).into_iter().map(|h| h.to_vec()).collect()
    }

    fn idle_ttl(&self, client: &Client) -> time::Duration {
        let secs =
            client.refresh_token_ttl.map(i64::from).unwrap_or(self.config.refresh_token_idle_ttl.as_secs() as i64);
        time::Duration::seconds(secs)
    }

    /// Starts a family for a login and returns its id and first token.
    pub async fn start_family(
        &self,
        client: &Client,
        user_id: Uuid,
        scopes: &[String],
    ) -> Result<(Uuid, String), Error> {
        let family = Uuid::now_v7();
        let mut conn = self.db.acquire().await?;
        let token = self.start_family_on(&mut conn, family, client, user_id, scopes).await?;
        Ok((family, token))
    }

    /// Starts family `family` on `conn` (inside the caller's transaction, when it has one) and
    /// returns its first token.
    pub async fn start_family_on(
        &self,
        conn: &mut sqlx::PgConnection,
        family: Uuid,
        client: &Client,
        user_id: Uuid,
        scopes: &[String],
    ) -> Result<String, Error> {
        let now = self.clock.now();
        let absolute = now + self.config.refresh_token_absolute_ttl;
        let (token, hash) = self.generate();
        // Family and first token in one statement: one round trip, atomic.
        sqlx::query(
        "WITH family AS (
             INSERT INTO refresh_families (id, client_id, user_id, created_at, absolute_expires_at) VALUES ($1, $2, $3, $4, $5))
         INSERT INTO refresh_tokens (token_hash, family_id, generation, scopes, issued_at, expires_at, hmac_key_id)
         VALUES ($6, $1, 0, $7, $4, $8, $9)",
    )
    .bind(family)
    .bind(&client.client_id)
    .bind(user_id)
    .bind(now)
    .bind(absolute)
    .bind(&hash[..])
    .bind(scopes)
    .bind((now + self.idle_ttl(client)).min(absolute))
    .bind(&self.refresh_hmac.current().id()[..])
    .execute(conn)
    .await?;
        Ok(token)
    }

    /// `grant_type=refresh_token`: spend the presented token, issue its successor and an access token.
    /// `source` is the caller's address, named in the webhook when the token turns out to be reused.
    pub async fn rotate(
        &self,
        client: &Client,
        presented: &str,
        scope: Option<&str>,
        source: std::net::IpAddr,
    ) -> Result<TokenResponse, GrantError> {
        if !client.allows_grant("refresh_token") {
            return Err(GrantError::UnauthorizedClient("this client may not use the refresh_token grant"));
        }
        if !is_well_formed(presented) {
            return Err(INVALID);
        }
        let requested = match scope {
            None => None,
            Some(param) => {
                let wanted =
                    scopes::parse_param(param).ok_or_else(|| GrantError::InvalidScope("malformed scope".into()))?;
                (!wanted.is_empty()).then_some(wanted)
            }
        };
        // What a retry must ask for again: the same scopes, in any order.
        let asked = requested.as_ref().map(|r| {
            let mut r = r.clone();
            r.sort();
            r.dedup();
            r
        });
        let hash = self.hash_of(presented);
        let now = self.clock.now();
        let (token, new_hash) = self.successor_of(presented);
        let idle = self.idle_ttl(client);
        // One statement, one round trip, atomic: spend the presented token only if it is live, its
        // family is live, its user still exists and any requested scope is within token ∩ user ∩
        // client scopes; insert its successor (same scope, RFC 6749 §6) from the same row.
        let mut spent: Option<Spent> = None;
        for h in &hash {
            spent = sqlx::query_as(
            "WITH spent AS (
             UPDATE refresh_tokens t SET spent_at = $2, spent_scopes = $8
             FROM refresh_families f, users u
             WHERE t.token_hash = $1 AND t.spent_at IS NULL AND t.family_id = f.id AND f.client_id = $3
               AND f.revoked_at IS NULL AND t.expires_at > $2 AND f.absolute_expires_at > $2
               AND u.id = f.user_id AND u.deleted_at IS NULL
               AND ($4::text[] IS NULL OR $4::text[] <@ (SELECT coalesce(array_agg(s), '{}') FROM unnest(t.scopes) s
                                                          WHERE s = ANY(u.scopes) AND s = ANY($5::text[])))
             RETURNING t.family_id, t.generation, t.scopes, f.user_id, f.absolute_expires_at, u.scopes AS user_scopes),
         successor AS (
             INSERT INTO refresh_tokens (token_hash, family_id, generation, scopes, issued_at, expires_at, hmac_key_id)
             SELECT $6, family_id, generation + 1, scopes, $2, least($2 + $7::interval, absolute_expires_at), $9 FROM spent)
         SELECT family_id, scopes, user_id, user_scopes FROM spent",
        )
        .bind(h)
        .bind(now)
        .bind(&client.client_id)
        .bind(&requested)
        .bind(&client.scopes)
        .bind(&new_hash[..])
        .bind(idle)
        .bind(&asked)
        .bind(&self.refresh_hmac.current().id()[..])
        .fetch_optional(&self.db)
        .await?;
            if spent.is_some() {
                break;
            }
        }

        let Some((family, token_scopes, user_id, user_scopes)) = spent else {
            if let Some(answer) = self.retry(client, presented, &hash, asked.as_deref(), requested, now).await? {
                return Ok(answer);
            }
            return Err(self.refuse(client, &hash, now, source).await?);
        };
        let issued = Issued { family, user_id, token_scopes, user_scopes };
        self.answer(client, issued, requested, token)
    }

    /// Answers a rotation (or a retry of one): an access token for the grant, and `successor`.
    pub(super) fn answer(
        &self,
        client: &Client,
        issued: Issued,
        requested: Option<Vec<String>>,
        successor: String,
    ) -> Result<TokenResponse, GrantError> {
        // The user's and the client's scopes may have narrowed since login.
        let Issued { family, user_id, token_scopes, user_scopes } = issued;
        // OpenID scopes (`openid`, `profile`, `offline_access`) need only the client's scopes.
        let granted = requested.unwrap_or_else(|| {
            token_scopes
                .into_iter()
                .filter(|s| (user_scopes.contains(s) || scopes::is_oidc(s)) && client.scopes.contains(s))
                .collect()
        });
        let aud = self.resolve_audience(client, None).map_err(|e| GrantError::InvalidRequest(e.into()))?;
        let grant = Grant { client, sub: user_id.to_string(), scopes: &granted, aud, sid: Some(family) };
        let (access_token, expires_in) = self.issue_access_token(&grant)?;
        crate::metrics::token_issued("refresh_token");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            scope: granted.join(" "),
            refresh_token: Some(successor),
            id_token: None,
        })
    }

    /// Works out why a token was not spendable; on reuse, revokes the whole family.
    async fn refuse(
        &self,
        client: &Client,
        hash: &[Vec<u8>],
        now: OffsetDateTime,
        source: std::net::IpAddr,
    ) -> Result<GrantError, Error> {
        let mut found: Option<Found> = None;
        for h in hash {
            found = sqlx::query_as(
                "SELECT t.spent_at, t.expires_at, f.revoked_at, f.absolute_expires_at, f.client_id, f.id, f.user_id,
                    EXISTS (SELECT 1 FROM users u WHERE u.id = f.user_id AND u.deleted_at IS NULL)
             FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = $1",
            )
            .bind(h)
            .fetch_optional(&self.db)
            .await?;
            if found.is_some() {
                break;
            }
        }
        let Some((spent_at, expires_at, revoked_at, absolute, owner, family, user_id, user_live)) = found else {
            return Ok(INVALID);
        };
        if owner != client.client_id {
            return Ok(INVALID);
        }
        if spent_at.is_some() {
            tracing::warn!(family_id = %family, client_id = %owner, "refresh token reuse detected: revoking the family");
            crate::metrics::refresh_reuse();
            // The family's revocation, the anomaly and the webhook commit together.
            let mut tx = self.db.begin().await?;
            let revoked = revoked_at.is_none() && revoke_family_in(&mut tx, family, now, "refresh token reuse").await?;
            let raised = anomalies::raise(
            &mut tx,
            &NewAnomaly {
                kind: anomalies::kind::REFRESH_TOKEN_REUSE,
                key_id: None,
                client_id: Some(&owner),
                subject: family.to_string(),
                window_start: OffsetDateTime::UNIX_EPOCH,
                detected_at: now,
                details: json!({"family_id": family, "user_id": user_id, "client_id": owner, "spent_at": spent_at.map(|t| t.unix_timestamp())}),
            },
        )
        .await?;
            if raised {
                let data = json!({"client_id": owner, "sub": user_id, "sid": family, "source_ip": source.to_string()});
                let event = Event { kind: EventType::RefreshReuse, owner: None, at: now, data };
                crate::webhooks::events::enqueue(&mut tx, &event).await?;
            }
            tx.commit().await?;
            if revoked {
                self.family_revoked_here(family, now);
            }
            return Ok(INVALID);
        }
        if revoked_at.is_none() && expires_at > now && absolute > now && user_live {
            // Everything else about it is fine: the requested scope was wider than allowed. Not spent.
            return Ok(GrantError::InvalidScope("a refresh may only narrow the scope".into()));
        }
        Ok(INVALID)
    }

    /// Revokes a family (idempotent): outbox event in the same transaction, and this instance at once.
    pub async fn revoke_family(&self, family: Uuid, now: OffsetDateTime, reason: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin().await?;
        if !revoke_family_in(&mut tx, family, now, reason).await? {
            return Ok(false);
        }
        tx.commit().await?;
        self.family_revoked_here(family, now);
        Ok(true)
    }

    /// After a family's revocation committed: this instance refuses its access tokens at once.
    fn family_revoked_here(&self, family: Uuid, now: OffsetDateTime) {
        let until = now + self.config.max_access_token_ttl();
        self.revoked.revoke_family(family, until.unix_timestamp());
        crate::metrics::revocation("refresh_family");
    }
}

/// Marks a family revoked with its outbox event, inside the caller's transaction; false when it
/// already was.
async fn revoke_family_in(
    conn: &mut sqlx::PgConnection,
    family: Uuid,
    now: OffsetDateTime,
    reason: &str,
) -> Result<bool, Error> {
    let absolute: Option<OffsetDateTime> = sqlx::query_scalar(
        "UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL
         RETURNING absolute_expires_at",
    )
    .bind(family)
    .bind(now)
    .bind(reason)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(absolute) = absolute else {
        return Ok(false);
    };
    revocation::record(
        conn,
        &NewRevocation::new(Kind::RefreshFamily, family.to_string(), now).expires(absolute).reason(reason),
    )
    .await?;
    Ok(true)
}

/// Whether `s` looks like one of our refresh tokens.
pub fn is_well_formed(s: &str) -> bool {
    s.len() == PREFIX.len() + BODY_LEN && s.starts_with(PREFIX) && secrets::is_base62(&s[PREFIX.len()..])
}

type Spent = (Uuid, Vec<String>, Uuid, Vec<String>);

/// What a rotation issues from: the family, its user, the token's scopes and the user's now.
pub(super) struct Issued {
    pub(super) family: Uuid,
    pub(super) user_id: Uuid,
    pub(super) token_scopes: Vec<String>,
    pub(super) user_scopes: Vec<String>,
}
type Found = (Option<OffsetDateTime>, OffsetDateTime, Option<OffsetDateTime>, OffsetDateTime, String, Uuid, Uuid, bool);

const INVALID: GrantError = GrantError::InvalidGrant("the refresh token is invalid, expired or revoked");

//! The developer portal's backend for the browser (BFF): it signs people in through Tessera's own
//! authorization endpoint as the public client `tessera-portal` with PKCE S256 (RFC 7636), redeems
//! the code on the server, and keeps a session of its own in a table. The tokens never reach the
//! browser: the portal acts through the domain services in-process, as the signed-in user, with
//! the scopes their code grant gave them. Nothing here knows HTTP (see `http::browser::portal`).

pub mod bootstrap;

use std::{net::IpAddr, sync::Arc};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::hmac;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    audit::Actor,
    clients::Credentials,
    clock::Clock,
    config::Config,
    error::Result,
    scopes,
    secrets::{self, random_base62},
    tokens::{TokenRequest, Tokens},
};

pub use bootstrap::CLIENT_ID;

/// How long a browser has to finish signing in after `/portal` sent it to the sign-in page.
const LOGIN_TTL_SECS: i64 = 600;

/// The portal's sessions and sign-in.
#[derive(Clone)]
pub struct Portal {
    db: PgPool,
    clock: Clock,
    config: Arc<Config>,
    tokens: Tokens,
    hmac: hmac::Key,
}

/// A sign-in the portal has started: where to send the browser, and the cookie that keeps the
/// PKCE verifier and `state` (MAC'd, `HttpOnly`, short-lived) until the callback.
pub struct Login {
    /// `/oauth/authorize?...` with `code_challenge_method=S256`.
    pub authorize_url: String,
    /// The login cookie's value.
    pub cookie: String,
}

/// The signed-in user of a portal session.
#[derive(Debug, Clone)]
pub struct PortalUser {
    /// User id: the owner of the keys they create.
    pub user_id: Uuid,
    /// Username, for the page header.
    pub username: String,
    /// Holds `admin` (granted by the code grant, and still the user's).
    pub admin: bool,
    /// The scopes the sign-in granted that the user still holds.
    pub scopes: Vec<String>,
}

impl PortalUser {
    /// Whether the session may act with `scope` (`admin` implies every scope, as on `/v1`).
    pub fn has(&self, scope: &str) -> bool {
        scopes::allows(self.scopes.iter().map(String::as_str), scope)
    }

    /// The audit actor for changes made through the portal from `ip`.
    pub fn actor(&self, ip: IpAddr) -> Actor {
        Actor { id: self.user_id.to_string(), ip: Some(ip.to_string()), request_id: None }
    }
}

impl Portal {
    /// A portal keyed by `hmac` (session cookies' hashes, CSRF tokens, the login cookie's MAC).
    pub fn new(db: PgPool, clock: Clock, config: Arc<Config>, tokens: Tokens, hmac: hmac::Key) -> Self {
        Self { db, clock, config, tokens, hmac }
    }

    /// The service clock's time (tests advance it).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// The service's display name.
    pub fn service_name(&self) -> &str {
        &self.config.service_name
    }

    /// The issuer's path without a trailing slash (`""`, or `/tenant`): the prefix of the
    /// portal's links, so it works under an issuer with a path.
    pub fn base_path(&self) -> String {
        url::Url::parse(&self.config.issuer).map(|u| u.path().trim_end_matches('/').to_owned()).unwrap_or_default()
    }

    /// Whether cookies are `Secure` and `__Host-` (all but loopback `http` issuers).
    pub fn secure_cookies(&self) -> bool {
        crate::signin::secure_cookies(&self.config.issuer)
    }

    fn mac(&self, label: &str, data: &str) -> String {
        let mut input = Vec::with_capacity(label.len() + 1 + data.len());
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        input.extend_from_slice(data.as_bytes());
        URL_SAFE_NO_PAD.encode(secrets::keyed_hash(&self.hmac, &input))
    }

    /// Starts a sign-in: a fresh verifier and `state`, and the authorization request that carries
    /// the verifier's S256 challenge.
    pub fn begin(&self) -> Login {
        let verifier = random_base62(64);
        let state = random_base62(32);
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        let exp = self.clock.unix() + LOGIN_TTL_SECS;
        let payload = format!("{exp}.{state}.{verifier}");
        let cookie = format!("{payload}.{}", self.mac("login", &payload));
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", &bootstrap::redirect_uri(&self.config.issuer)),
            ("scope", &bootstrap::SCOPES.join(" ")),
            ("state", &state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .unwrap_or_default();
        let authorize_url = format!("{}/oauth/authorize?{query}", self.config.issuer.trim_end_matches('/'));
        Login { authorize_url, cookie }
    }

    /// The callback: checks `state` against the login cookie, redeems `code` with the verifier,
    /// and starts a portal session. `Ok(None)` when the browser's sign-in cannot be completed (no
    /// or a forged or expired login cookie, another `state`, a refused code): it should start over.
    ///
    /// # Errors
    /// Database and signing failures.
    pub async fn complete(
        &self,
        login_cookie: Option<&str>,
        code: &str,
        state: &str,
        source: IpAddr,
    ) -> Result<Option<String>> {
        let Some(verifier) = login_cookie.and_then(|c| self.open_login(c, state)) else {
            return Ok(None);
        };
        let creds = Credentials { client_id: CLIENT_ID.to_owned(), secret: None };
        let redirect_uri = bootstrap::redirect_uri(&self.config.issuer);
        let req = TokenRequest {
            grant_type: "authorization_code",
            scope: None,
            audience: None,
            username: None,
            password: None,
            refresh_token: None,
            code: Some(code),
            redirect_uri: Some(&redirect_uri),
            code_verifier: Some(&verifier),
        };
        let tokens = match self.tokens.token(&creds, &req, source).await {
            Ok(t) => t,
            Err(e) => {
                tracing::info!(error = %e, "portal sign-in refused");
                return Ok(None);
            }
        };
        let Ok(claims) = self.tokens.validate_access_token(&tokens.access_token) else {
            return Ok(None);
        };
        let (Ok(user_id), Some(Ok(family))) =
            (Uuid::parse_str(&claims.sub), claims.sid.as_deref().map(Uuid::parse_str))
        else {
            return Ok(None);
        };
        let granted: Vec<String> = claims.scopes().map(str::to_owned).collect();
        let cookie = random_base62(43);
        let now = self.clock.now();
        let expires_at = now + self.config.session_absolute_ttl;
        sqlx::query(
            "INSERT INTO portal_sessions (id_hash, user_id, family_id, scopes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&secrets::keyed_hash(&self.hmac, cookie.as_bytes())[..])
        .bind(user_id)
        .bind(family)
        .bind(&granted)
        .bind(now)
        .bind(expires_at)
        .execute(&self.db)
        .await?;
        Ok(Some(cookie))
    }

    /// The verifier in a login cookie whose MAC, expiry and `state` all check out.
    fn open_login(&self, cookie: &str, state: &str) -> Option<String> {
        let (payload, mac) = cookie.rsplit_once('.')?;
        if !secrets::constant_time_eq(self.mac("login", payload).as_bytes(), mac.as_bytes()) {
            return None;
        }
        let mut parts = payload.splitn(3, '.');
        let exp: i64 = parts.next()?.parse().ok()?;
        let expected_state = parts.next()?;
        let verifier = parts.next()?;
        let fresh = exp > self.clock.unix();
        (fresh && secrets::constant_time_eq(expected_state.as_bytes(), state.as_bytes())).then(|| verifier.to_owned())
    }

    /// The user of the session `cookie`, if it is live: unexpired, its refresh family not revoked,
    /// the user not deleted. `admin` needs both the session's grant and the user's current scopes.
    ///
    /// # Errors
    /// Database errors.
    pub async fn session(&self, cookie: &str) -> Result<Option<PortalUser>> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let row: Option<(Uuid, String, Vec<String>, Vec<String>)> = sqlx::query_as(
            "SELECT s.user_id, u.username, s.scopes, u.scopes FROM portal_sessions s
               JOIN users u ON u.id = s.user_id AND u.deleted_at IS NULL
               JOIN refresh_families f ON f.id = s.family_id AND f.revoked_at IS NULL
                                        AND f.absolute_expires_at > $2
              WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(&secrets::keyed_hash(&self.hmac, cookie.as_bytes())[..])
        .bind(self.clock.now())
        .fetch_optional(&self.db)
        .await?;
        Ok(row.map(|(user_id, username, granted, current)| {
            let scopes: Vec<String> = granted.into_iter().filter(|s| current.contains(s)).collect();
            let admin = scopes.iter().any(|s| s == scopes::ADMIN);
            PortalUser { user_id, username, admin, scopes }
        }))
    }

    /// The CSRF token of the session `cookie` (a synchronizer token derived from it: a cross-site
    /// page can make the browser send the cookie, but can neither read it nor compute this).
    pub fn csrf_token(&self, cookie: &str) -> String {
        self.mac("csrf", cookie)
    }

    /// Whether `token` is the CSRF token of session `cookie` (constant time).
    pub fn csrf_ok(&self, cookie: &str, token: &str) -> bool {
        secrets::constant_time_eq(self.csrf_token(cookie).as_bytes(), token.as_bytes())
    }

    /// Ends the session `cookie` and revokes the refresh family its sign-in started. Returns the
    /// `/oauth/logout` URL that ends the sign-in session and comes back to the signed-out page.
    ///
    /// # Errors
    /// Database errors.
    pub async fn end(&self, cookie: Option<&str>) -> Result<String> {
        if let Some(cookie) = cookie {
            let family: Option<Uuid> =
                sqlx::query_scalar("DELETE FROM portal_sessions WHERE id_hash = $1 RETURNING family_id")
                    .bind(&secrets::keyed_hash(&self.hmac, cookie.as_bytes())[..])
                    .fetch_optional(&self.db)
                    .await?;
            if let Some(family) = family {
                self.tokens.revoke_family(family, self.clock.now(), "portal sign-out").await?;
            }
        }
        let query = serde_urlencoded::to_string([
            ("client_id", CLIENT_ID),
            ("post_logout_redirect_uri", &bootstrap::signed_out_uri(&self.config.issuer)),
        ])
        .unwrap_or_default();
        Ok(format!("{}/oauth/logout?{query}", self.config.issuer.trim_end_matches('/')))
    }
}

/// Deletes portal sessions that expired before `now`, or whose refresh family is gone or revoked
/// (housekeeping: such sessions can never be used again).
///
/// # Errors
/// Database errors.
pub async fn purge(db: &PgPool, now: time::OffsetDateTime) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM portal_sessions s WHERE s.expires_at <= $1
            OR NOT EXISTS (SELECT 1 FROM refresh_families f WHERE f.id = s.family_id AND f.revoked_at IS NULL)",
    )
    .bind(now)
    .execute(db)
    .await?
    .rows_affected())
}

//! Domain errors: [`Error`], what every service returns, and [`GrantError`], the outcomes of
//! OAuth client authentication and grants (RFC 6749 §5.2). Neither knows HTTP: `http::problem`
//! and `http::oauth_error` turn them into the two wire formats, once.

/// What went wrong in domain logic, independent of HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but a value breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist (or is not visible to the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change collides with existing state.
    #[error("{0}")]
    Conflict(String),
    /// The API key is revoked: nothing about it can change any more (409 `KEY_REVOKED`).
    #[error("the key is revoked; nothing revives it")]
    KeyRevoked,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A quota was reached.
    #[error("{0}")]
    LimitExceeded(String),
    /// A reserved scope was asked for on an API key or in `key_scopes` (400 `SCOPE_RESERVED`).
    #[error("{0}")]
    ScopeReserved(String),
    /// An API key scope outside its owner's `key_scopes` (403 `SCOPE_NOT_ALLOWED`).
    #[error("{0}")]
    ScopeNotAllowed(String),
    /// A client redirect URI that is not an absolute https (or loopback http) URI without a
    /// fragment (400 `INVALID_REDIRECT_URI`).
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// Postgres failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A moment's gap in what the service needs (no active signing key between a revocation and
    /// the reload that promotes its successor): try again.
    #[error("temporarily unavailable: {0}")]
    Unavailable(&'static str),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller's source address has too many failed or in-flight credential checks: try again
    /// after this many seconds (429).
    #[error("too many credential checks from this address; retry after {0} s")]
    TooManyAttempts(u64),
    /// No password-hashing worker came free in time: try again after this many seconds (503).
    #[error("password hashing is saturated; retry after {0} s")]
    Saturated(u64),
    /// A revocation-log cursor older than what is kept: resuming there would skip events
    /// (410 `CURSOR_EXPIRED`). Start again from the current state.
    #[error("events after this cursor are no longer kept; the oldest is {oldest_seq}")]
    CursorExpired {
        /// The oldest `seq` still kept.
        oldest_seq: i64,
    },
    /// A signing-key rotation would activate a next key published for less than the JWKS max-age:
    /// verifiers holding a cached JWKS would meet an unknown `kid`.
    #[error("the next signing key may not sign before {not_before}")]
    NextKeyTooNew {
        /// When the next key has been published for the full JWKS max-age.
        not_before: time::OffsetDateTime,
        /// Whole seconds until then, at least 1 (the `Retry-After` value).
        retry_after: u64,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a client could not be authenticated or a grant not be given: the error codes of RFC 6749
/// §5.2 (and §2.3.1 for client authentication), as domain outcomes. `http::oauth_error` gives each
/// its status and body.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Malformed or contradictory request (`invalid_request`).
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// Client authentication failed; never says why (`invalid_client`).
    #[error("invalid_client")]
    InvalidClient,
    /// The grant (credentials, refresh token) is invalid, expired, revoked or reused (`invalid_grant`).
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// The client may not use this grant type (`unauthorized_client`).
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    /// The grant type is unknown (`unsupported_grant_type`).
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The requested scope is broader than allowed or malformed (`invalid_scope`).
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// An authenticated client lacks the privilege for this endpoint (`insufficient_scope`).
    #[error("insufficient_scope: {0}")]
    InsufficientScope(&'static str),
    /// Anything else: the service, not the request, failed (or is throttling or saturated; see
    /// [`Error::TooManyAttempts`] and [`Error::Saturated`]).
    #[error(transparent)]
    Failed(#[from] Error),
}

impl GrantError {
    /// The RFC 6749 §5.2 `error` code (`Failed` answers `server_error`; the HTTP layer gives a
    /// failure its precise code).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Failed(_) => "server_error",
        }
    }

    /// The `error_description` shown to the client: what was wrong, never why a credential failed.
    pub fn description(&self) -> String {
        match self {
            Self::InvalidRequest(d) | Self::InvalidScope(d) => d.clone(),
            Self::InvalidClient => "client authentication failed".to_owned(),
            Self::InvalidGrant(d) | Self::UnauthorizedClient(d) | Self::InsufficientScope(d) => (*d).to_owned(),
            Self::UnsupportedGrantType => "the grant type is not supported".to_owned(),
            Self::Failed(_) => "an internal error occurred".to_owned(),
        }
    }
}

impl From<sqlx::Error> for GrantError {
    fn from(e: sqlx::Error) -> Self {
        Self::Failed(Error::Database(e))
    }
}

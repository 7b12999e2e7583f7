//! Errors: the domain error every module returns, and the two wire formats it becomes —
//! RFC 9457 problem+json under `/v1` and RFC 6749 §5.2 JSON under `/oauth`. Mapped here, once.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

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

/// An RFC 9457 problem, the only error body under `/v1`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    /// Rarely used parts, boxed so the common error stays small.
    extra: Option<Box<ProblemExtra>>,
}

/// Extension members (RFC 9457 §3.2) and headers a few problems carry.
#[derive(Debug, Default)]
struct ProblemExtra {
    members: serde_json::Map<String, serde_json::Value>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    r#type: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// A problem with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into(), extra: None }
    }
    /// 400 `INVALID_REQUEST` for an `Authorization` header that names the Bearer scheme but is
    /// not `Bearer <one b64token>`: RFC 6750 §3.1 `invalid_request`, with its challenge.
    pub fn invalid_bearer_request(detail: impl Into<String>) -> Self {
        Self::bad_request(detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tessera\", error=\"invalid_request\""),
        )
    }
    fn extra_mut(&mut self) -> &mut ProblemExtra {
        self.extra.get_or_insert_with(Default::default)
    }
    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.extra_mut().headers.push((name, value));
        self
    }
    fn with_member(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extra_mut().members.insert(name.to_owned(), value);
        self
    }
    /// 400 `INVALID_REQUEST`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", detail)
    }
    /// 401 `UNAUTHORIZED`, sent with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", detail)
    }
    /// 403 `INSUFFICIENT_SCOPE`.
    pub fn insufficient_scope(scope: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "INSUFFICIENT_SCOPE", format!("this operation needs scope {scope:?}"))
    }
    /// 404 `NOT_FOUND`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", detail)
    }
    /// 500 `INTERNAL`; the cause is logged here and never shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "an internal error occurred")
    }
    /// The status of this problem.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The stable code of this problem.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The problem that stands for a bare status produced outside any handler (router, layers).
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => {
                Self::new(status, "METHOD_NOT_ALLOWED", "this method is not allowed on this resource")
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "PAYLOAD_TOO_LARGE", "the request body is larger than 64 KiB")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::new(status, "UNSUPPORTED_MEDIA_TYPE", "the request body must be application/json")
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                Self::new(status, "UNAVAILABLE", "the service could not complete the request in time")
            }
            StatusCode::UNAUTHORIZED => Self::unauthorized("a valid bearer token is required"),
            s if s.is_client_error() => Self::new(s, "INVALID_REQUEST", "the request could not be processed"),
            s => Self::new(s, "INTERNAL", "an internal error occurred"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = ProblemBody {
            r#type: "about:blank",
            title,
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            extra: self.extra.as_ref().map(|e| &e.members).filter(|m| !m.is_empty()),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, bytes).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.detail.contains("expired") || self.detail.contains("invalid") {
                "Bearer realm=\"tessera\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"tessera\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        } else if self.status == StatusCode::FORBIDDEN && self.code == "INSUFFICIENT_SCOPE" {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tessera\", error=\"insufficient_scope\""),
            );
        }
        // Set last: a problem's own headers win over the defaults above.
        if let Some(extra) = self.extra {
            for (name, value) in extra.headers {
                h.insert(name, value);
            }
        }
        res
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(d) => Self::bad_request(d),
            Error::NotFound(what) => Self::not_found(format!("{what} not found")),
            Error::Conflict(d) => Self::new(StatusCode::CONFLICT, "CONFLICT", d),
            Error::Forbidden(d) => Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", d),
            Error::LimitExceeded(d) => Self::new(StatusCode::CONFLICT, "LIMIT_EXCEEDED", d),
            Error::ScopeReserved(d) => Self::new(StatusCode::BAD_REQUEST, "SCOPE_RESERVED", d),
            Error::ScopeNotAllowed(d) => Self::new(StatusCode::FORBIDDEN, "SCOPE_NOT_ALLOWED", d),
            Error::InvalidRedirectUri(d) => Self::new(StatusCode::BAD_REQUEST, "INVALID_REDIRECT_URI", d),
            Error::Database(db) => from_db(db),
            Error::Unavailable(why) => {
                tracing::warn!(why, "temporarily unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the service is temporarily unavailable, try again",
                )
            }
            Error::Internal(d) => Self::internal(d),
            Error::TooManyAttempts(secs) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "too many failed credential checks from this address, try again later",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs)),
            Error::Saturated(secs) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the service is busy, try again")
                    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            Error::NextKeyTooNew { not_before, retry_after } => {
                let at = not_before.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
                Self::new(
                    StatusCode::CONFLICT,
                    "NEXT_KEY_TOO_NEW",
                    format!(
                        "the next signing key has been published for less than the JWKS max-age; \
                         it may become active at {at} (or rotate with ?force=true)"
                    ),
                )
                .with_member("not_before", serde_json::Value::String(at))
                .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after))
            }
        }
    }
}

/// SQLSTATE 22021 (character_not_in_repertoire, what Postgres answers for U+0000 in text) and
/// 22P05 (untranslatable_character): the input, not the service, is at fault. Inputs that could
/// carry such text are checked before they reach SQL; this keeps any that are missed a 400.
fn is_unstorable_text(code: Option<&str>) -> bool {
    matches!(code, Some("22021" | "22P05"))
}

/// Why Postgres cannot serve right now, when that is the trouble (rather than the query): the pool
/// is exhausted or closed, the server unreachable, or its SQLSTATE says so: connection exceptions
/// (08), insufficient resources (53: too many connections, disk full), operator intervention
/// (57P01-57P03: shutdown, crash, cannot connect now), a database not accepting connections (55000),
/// a statement timeout (57014). Both error surfaces answer these with 503, never 500.
fn db_unavailable(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::PoolTimedOut => Some("database pool exhausted"),
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed => Some("database unreachable"),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("57014") => Some("statement timeout"),
            Some(c) if c.starts_with("08") || c.starts_with("53") => Some("database unavailable"),
            Some("57P01" | "57P02" | "57P03" | "55000") => Some("database unavailable"),
            _ => None,
        },
        _ => None,
    }
}

fn from_db(e: sqlx::Error) -> ApiError {
    if let Some(why) = db_unavailable(&e) {
        tracing::warn!(error = %e, why, "database unavailable");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "the database is unavailable, try again");
    }
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            ApiError::new(StatusCode::CONFLICT, "CONFLICT", "a resource with that identifier already exists")
        }
        sqlx::Error::Database(db) if is_unstorable_text(db.code().as_deref()) => {
            ApiError::bad_request("text values must not contain NUL (U+0000) characters")
        }
        _ => ApiError::internal(e),
    }
}

/// An RFC 6749 §5.2 error, the only error body under `/oauth`.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// Malformed or contradictory request.
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// Client authentication failed; never says why.
    #[error("invalid_client")]
    InvalidClient,
    /// The grant (credentials, refresh token) is invalid, expired, revoked or reused.
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    /// The client may not use this grant type.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(&'static str),
    /// The grant type is unknown.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// The requested scope is broader than allowed or malformed.
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    /// An authenticated client lacks the privilege for this endpoint.
    #[error("insufficient_scope: {0}")]
    InsufficientScope(&'static str),
    /// The body exceeds the size limit (413, reported as `invalid_request`).
    #[error("invalid_request: body too large")]
    PayloadTooLarge,
    /// Our fault; details are logged, never sent.
    #[error("server_error")]
    ServerError,
    /// A dependency is down.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// Too many failed or in-flight credential checks from the caller's address (429 with
    /// `Retry-After` seconds; `temporarily_unavailable`, an extension of RFC 6749 §5.2).
    #[error("temporarily_unavailable: too many attempts")]
    TooManyAttempts(u64),
    /// No password-hashing worker came free in time (503 with `Retry-After` seconds).
    #[error("temporarily_unavailable: busy")]
    Busy(u64),
}

#[derive(Serialize)]
struct OAuthBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl OAuthError {
    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::PayloadTooLarge => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable | Self::TooManyAttempts(_) | Self::Busy(_) => "temporarily_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TemporarilyUnavailable | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn description(&self) -> String {
        match self {
            Self::InvalidRequest(d) | Self::InvalidScope(d) => d.clone(),
            Self::InvalidClient => "client authentication failed".to_owned(),
            Self::PayloadTooLarge => "the request body is larger than 64 KiB".to_owned(),
            Self::InvalidGrant(d) | Self::UnauthorizedClient(d) | Self::InsufficientScope(d) => (*d).to_owned(),
            Self::UnsupportedGrantType => "the grant type is not supported".to_owned(),
            Self::ServerError => "an internal error occurred".to_owned(),
            Self::TemporarilyUnavailable | Self::Busy(_) => {
                "the service is temporarily unavailable, try again".to_owned()
            }
            Self::TooManyAttempts(_) => {
                "too many failed credential checks from this address, try again later".to_owned()
            }
        }
    }

    /// The error standing for a bare status produced outside any handler.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::InvalidClient,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::METHOD_NOT_ALLOWED => Self::InvalidRequest("this endpoint only accepts POST".into()),
            StatusCode::NOT_FOUND => Self::InvalidRequest("no such endpoint".into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::InvalidRequest("the body must be application/x-www-form-urlencoded".into())
            }
            s if s.is_server_error() && s != StatusCode::INTERNAL_SERVER_ERROR => Self::TemporarilyUnavailable,
            s if s.is_client_error() => Self::InvalidRequest("the request could not be processed".into()),
            _ => Self::ServerError,
        }
    }

    /// Renders with a given status (used when a layer chose the status, e.g. 413 or 405).
    pub fn into_response_with_status(self, status: StatusCode) -> Response {
        let mut res = self.into_response();
        *res.status_mut() = status;
        res
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let desc = self.description();
        let body = serde_json::to_vec(&OAuthBody { error: self.code(), error_description: &desc }).unwrap_or_default();
        let mut res = (self.status(), body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if matches!(self, Self::InvalidClient) {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"tessera\""));
        }
        if let Self::TooManyAttempts(secs) | Self::Busy(secs) = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<Error> for OAuthError {
    fn from(e: Error) -> Self {
        if let Error::Database(db) = &e {
            if let Some(why) = db_unavailable(db) {
                tracing::warn!(error = %db, why, "database unavailable");
                return Self::TemporarilyUnavailable;
            }
        }
        match e {
            Error::Invalid(d) => Self::InvalidRequest(d),
            Error::Database(sqlx::Error::Database(db)) if is_unstorable_text(db.code().as_deref()) => {
                Self::InvalidRequest("text values must not contain NUL (U+0000) characters".into())
            }
            Error::Unavailable(why) => {
                tracing::warn!(why, "temporarily unavailable");
                Self::TemporarilyUnavailable
            }
            Error::TooManyAttempts(secs) => Self::TooManyAttempts(secs),
            Error::Saturated(secs) => Self::Busy(secs),
            other => {
                tracing::error!(error = %other, "internal error in oauth endpoint");
                Self::ServerError
            }
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        from_db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_attempts_and_saturation_carry_retry_after_in_both_formats() {
        let oauth = OAuthError::from(Error::TooManyAttempts(17)).into_response();
        assert_eq!(oauth.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(oauth.headers()[header::RETRY_AFTER], "17");
        assert_eq!(oauth.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(OAuthError::from(Error::TooManyAttempts(17)).code(), "temporarily_unavailable");

        let busy = OAuthError::from(Error::Saturated(2));
        assert_eq!(busy.code(), "temporarily_unavailable");
        let busy = busy.into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "2");

        let api = ApiError::from(Error::TooManyAttempts(9));
        assert_eq!((api.status(), api.code()), (StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS"));
        let api = api.into_response();
        assert_eq!(api.headers()[header::RETRY_AFTER], "9");
        assert_eq!(api.headers()[header::CONTENT_TYPE], "application/problem+json");
        let api = ApiError::from(Error::Saturated(2)).into_response();
        assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.headers()[header::RETRY_AFTER], "2");
    }
}

//! RFC 9457 problem+json, the only error body under `/v1`, and the one mapping from the domain
//! [`Error`] (SQLSTATE rules included) to it.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::error::Error;

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
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "PAYLOAD_TOO_LARGE",
                "the request body is too large (at most 64 KiB; 1 MiB for leak reports)",
            ),
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
            Error::KeyRevoked => Self::new(
                StatusCode::CONFLICT,
                "KEY_REVOKED",
                "the key is revoked and cannot be changed; nothing revives it (create a new key)",
            ),
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
            Error::CursorExpired { oldest_seq } => Self::new(
                StatusCode::GONE,
                "CURSOR_EXPIRED",
                format!(
                    "events after this cursor are no longer kept (the oldest is {oldest_seq}); \
                     rebuild what you hold from the current state and follow from there"
                ),
            )
            .with_member("oldest_seq", serde_json::Value::from(oldest_seq)),
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
pub(crate) fn is_unstorable_text(code: Option<&str>) -> bool {
    matches!(code, Some("22021" | "22P05"))
}

/// Why Postgres cannot serve right now, when that is the trouble (rather than the query): the pool
/// is exhausted or closed, the server unreachable, or its SQLSTATE says so: connection exceptions
/// (08), insufficient resources (53: too many connections, disk full), operator intervention
/// (57P01-57P03: shutdown, crash, cannot connect now), a database not accepting connections (55000),
/// a statement timeout (57014). Both error surfaces answer these with 503, never 500.
pub(crate) fn db_unavailable(e: &sqlx::Error) -> Option<&'static str> {
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

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        from_db(e)
    }
}

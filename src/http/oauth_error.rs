//! RFC 6749 §5.2 JSON, the only error body under `/oauth`: the wire form of [`GrantError`] and
//! of the statuses layers produce outside any handler.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::problem::{db_unavailable, is_unstorable_text};
use crate::error::{Error, GrantError};

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

impl From<GrantError> for OAuthError {
    fn from(e: GrantError) -> Self {
        match e {
            GrantError::InvalidRequest(d) => Self::InvalidRequest(d),
            GrantError::InvalidClient => Self::InvalidClient,
            GrantError::InvalidGrant(d) => Self::InvalidGrant(d),
            GrantError::UnauthorizedClient(d) => Self::UnauthorizedClient(d),
            GrantError::UnsupportedGrantType => Self::UnsupportedGrantType,
            GrantError::InvalidScope(d) => Self::InvalidScope(d),
            GrantError::InsufficientScope(d) => Self::InsufficientScope(d),
            GrantError::Failed(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::Error, http::problem::ApiError};

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

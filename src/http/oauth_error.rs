//! RFC 6749 §5.2 JSON, the only error body under `/oauth`: the wire form of [`GrantError`] and
//! of the statuses layers produce outside any handler.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::problem::{db_unavailable, is_unstorable_text};
use crate::error::{Error, GrantError};

/// An RFC 6749 §5.2 error, the only error body under `/oauth`: a domain outcome, or one of the
/// failures only the service (not the request) is to blame for.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The request, the client or the grant was refused (never [`GrantError::Failed`]: that is
    /// mapped to one of the variants below).
    #[error(transparent)]
    Refused(GrantError),
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
    /// `invalid_request` with `detail`.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::Refused(GrantError::InvalidRequest(detail.into()))
    }

    /// The RFC 6749 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(e) => e.code(),
            Self::PayloadTooLarge => "invalid_request",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable | Self::TooManyAttempts(_) | Self::Busy(_) => "temporarily_unavailable",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Refused(GrantError::InvalidClient) => StatusCode::UNAUTHORIZED,
            Self::Refused(GrantError::InsufficientScope(_)) => StatusCode::FORBIDDEN,
            Self::Refused(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TemporarilyUnavailable | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn description(&self) -> String {
        match self {
            Self::Refused(e) => e.description(),
            Self::PayloadTooLarge => "the request body is larger than 64 KiB".to_owned(),
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
            StatusCode::UNAUTHORIZED => Self::Refused(GrantError::InvalidClient),
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::METHOD_NOT_ALLOWED => Self::invalid_request("this endpoint only accepts POST"),
            StatusCode::NOT_FOUND => Self::invalid_request("no such endpoint"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                Self::invalid_request("the body must be application/x-www-form-urlencoded")
            }
            s if s.is_server_error() && s != StatusCode::INTERNAL_SERVER_ERROR => Self::TemporarilyUnavailable,
            s if s.is_client_error() => Self::invalid_request("the request could not be processed"),
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
        if matches!(self, Self::Refused(GrantError::InvalidClient)) {
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
            Error::Invalid(d) => Self::invalid_request(d),
            Error::Database(sqlx::Error::Database(db)) if is_unstorable_text(db.code().as_deref()) => {
                Self::invalid_request("text values must not contain NUL (U+0000) characters")
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
            GrantError::Failed(e) => e.into(),
            refused => Self::Refused(refused),
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

//! The two kinds of failure: [`Error`], when the verifier itself cannot be set up or reach
//! Tessera, and [`Rejection`], why one presented credential is refused (with its RFC 6750 §3
//! challenge).

use std::fmt;

/// The verifier could not be built, or could not reach Tessera for something it needed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or malformed (names it).
    #[error("invalid verifier configuration: {0}")]
    Config(String),
    /// Tessera could not be reached, or answered something unexpected.
    #[error("tessera request to {url} failed: {reason}")]
    Http {
        /// The URL requested (never carries a credential).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Tessera's discovery document or JWKS is unusable.
    #[error("tessera metadata is unusable: {0}")]
    Metadata(String),
    /// The client credentials were refused at the token endpoint.
    #[error("the verifier's client credentials were refused: {0}")]
    Credentials(String),
}

impl Error {
    pub(crate) fn http(url: &str, reason: impl fmt::Display) -> Self {
        Self::Http { url: url.to_owned(), reason: reason.to_string() }
    }
}

/// Why a presented credential (access token or API key) is refused. Map it to a response with
/// [`Rejection::status`] and [`Rejection::www_authenticate`] (RFC 6750 §3), or, with the `axum`
/// feature, return it from a handler: it implements `IntoResponse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No credential was presented (401, a challenge without an error code, RFC 6750 §3.1).
    #[error("a bearer token or API key is required")]
    Missing,
    /// The `Authorization` header is not `Bearer <one token>` (400 `invalid_request`).
    #[error("the Authorization header is malformed")]
    Malformed,
    /// The credential is invalid: bad signature or format, wrong issuer or audience, unknown key
    /// (401 `invalid_token`). The reason is for logs, never shown to the caller.
    #[error("the credential is invalid: {0}")]
    Invalid(&'static str),
    /// The credential has expired (401 `invalid_token`).
    #[error("the credential has expired")]
    Expired,
    /// The credential, its family, client, user or signing key was revoked (401 `invalid_token`).
    #[error("the credential has been revoked")]
    Revoked,
    /// The credential is valid but lacks the scope named (403 `insufficient_scope`).
    #[error("the credential lacks scope {0:?}")]
    InsufficientScope(String),
    /// The API key is over its rate limit or usage (429).
    #[error("the API key is over its limits")]
    Limited,
    /// Revocations cannot currently be heard (the stream has been down longer than allowed, and
    /// the verifier fails closed), or Tessera could not answer for an API key (503).
    #[error("credentials cannot be checked right now")]
    Unavailable,
}

impl Rejection {
    /// The HTTP status this rejection calls for.
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::Missing | Self::Invalid(_) | Self::Expired | Self::Revoked => StatusCode::UNAUTHORIZED,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::Limited => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6750 §3.1 error code, if this rejection has one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::Limited | Self::Unavailable => None,
            Self::Malformed => Some("invalid_request"),
            Self::Invalid(_) | Self::Expired | Self::Revoked => Some("invalid_token"),
            Self::InsufficientScope(_) => Some("insufficient_scope"),
        }
    }

    /// The `WWW-Authenticate` challenge for `realm` (RFC 6750 §3), when this rejection carries one:
    /// `Bearer realm="…"` alone when nothing was presented, with `error` (and for a missing scope,
    /// `scope`) otherwise.
    pub fn www_authenticate(&self, realm: &str) -> Option<String> {
        let realm = realm.replace(['"', '\\'], "");
        match self {
            Self::Limited | Self::Unavailable => None,
            Self::Missing => Some(format!("Bearer realm=\"{realm}\"")),
            Self::InsufficientScope(scope) => {
                let scope = scope.replace(['"', '\\'], "");
                Some(format!("Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{scope}\""))
            }
            other => {
                let code = other.error_code().unwrap_or("invalid_token");
                let description = match other {
                    Self::Expired => "the access token expired",
                    Self::Revoked => "the credential was revoked",
                    Self::Malformed => "the Authorization header is malformed",
                    _ => "the credential is invalid",
                };
                Some(format!("Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{description}\""))
            }
        }
    }
}

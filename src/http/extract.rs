//! Extractors whose rejections come out in the service's own error formats, never as plain text.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use axum::{
    body::Bytes,
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        ConnectInfo, FromRequest, FromRequestParts, Request,
    },
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::http::{oauth_error::OAuthError, problem::ApiError};

/// JSON body; bad JSON, unknown fields and wrong types become 400 problems, a wrong content type 415.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    use axum::http::StatusCode;
    match r {
        JsonRejection::JsonDataError(e) => {
            // serde's message names the field and the problem ("unknown field `x`, expected ...").
            let detail = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.body_text());
            ApiError::bad_request(format!("invalid request body: {detail}"))
        }
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("the request body is not valid JSON"),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "the request body must be application/json",
        ),
        JsonRejection::BytesRejection(e) => ApiError::from_status(e.status()),
        other => ApiError::from_status(other.status()),
    }
}

/// Path parameters; a malformed id is a 400 problem.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(ApiError::bad_request(format!("invalid path parameter: {}", e.body_text())))
            }
            Err(other) => Err(ApiError::from_status(other.status())),
        }
    }
}

/// Query string; a bad parameter is a 400 problem.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request(format!("invalid query: {}", e.body_text())))
            }
            Err(other) => Err(ApiError::from_status(other.status())),
        }
    }
}

/// An `application/x-www-form-urlencoded` body as RFC 6749 reads it: no repeated parameters,
/// and empty values treated as absent. `Debug` shows the values of [`OAuthForm::SHOWN`] only: the
/// others (password, client secret, tokens, codes) print as `[redacted]`.
#[derive(Default)]
pub struct OAuthForm(pub HashMap<String, String>);

impl OAuthForm {
    /// Parameters whose values are not secrets.
    pub const SHOWN: [&'static str; 6] =
        ["grant_type", "scope", "client_id", "username", "token_type_hint", "audience"];
}

impl std::fmt::Debug for OAuthForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        let mut m = f.debug_map();
        for k in keys {
            if Self::SHOWN.contains(&k.as_str()) {
                m.entry(k, &self.0[k]);
            } else {
                m.entry(k, &"[redacted]");
            }
        }
        m.finish()
    }
}

impl OAuthForm {
    /// A parameter's value, if present and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
    /// A parameter that must be present.
    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name:?}")))
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
            .unwrap_or(false);
        if !is_form {
            return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| OAuthError::from_status(e.status()))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| OAuthError::invalid_request("the body is not valid form encoding"))?;
        let mut map = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            if v.is_empty() {
                continue;
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter {k:?} is repeated")));
            }
        }
        Ok(Self(map))
    }
}

/// The caller's own address (the TCP peer).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| ci.0.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(Self(ip))
    }
}

/// The request's id, as the edge assigned it and sends it back in `x-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(super::edge::current_request_id()))
    }
}

/// A JSON body that may be left out entirely (an empty body, with or without a JSON content type):
/// then it is `T::default()`. Anything else is read exactly as [`ApiJson`] reads it.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, crate::http::BODY_LIMIT)
            .await
            .map_err(|_| ApiError::from_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE))?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        ApiJson::<T>::from_request(req, state).await.map(|ApiJson(v)| Self(v))
    }
}

/// The body of an action that takes no parameters: empty, or a JSON object with no fields. Any
/// field is refused (400) like an unknown field anywhere else, rather than silently ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// The `limit` of a list: 1 to 1 000, default 100.
///
/// # Errors
/// 400 naming `limit` when out of range.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("limit: must be 1 to 1000, got {n}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_an_oauth_form_shows_no_secret() {
        let form = OAuthForm(HashMap::from([
            ("grant_type".to_owned(), "password".to_owned()),
            ("username".to_owned(), "ada".to_owned()),
            ("password".to_owned(), "hunter2-password".to_owned()),
            ("client_secret".to_owned(), "hunter2-secret".to_owned()),
            ("refresh_token".to_owned(), "tsr_hunter2".to_owned()),
        ]));
        let shown = format!("{form:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"password\": \"[redacted]\"") && shown.contains("\"ada\""), "{shown}");
    }
}

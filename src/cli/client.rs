//! The HTTP side of `tessera admin`: a client-credentials token, then JSON requests against a running
//! Tessera. Every failure becomes an [`AdminError`] with an exit code a script can branch on.

use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Where and as whom `tessera admin` talks to Tessera (`TESSERA_URL`, `TESSERA_CLIENT_ID`,
/// `TESSERA_CLIENT_SECRET`; the secret is read from the environment only).
pub struct Target {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// A client with `grant_type=client_credentials` and scope `admin`.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Why an admin command failed. The exit codes: 2 usage or configuration, 3 not authenticated or not
/// allowed (401/403), 4 not found (404), 5 refused (any other 4xx: bad input, conflict), 6 the
/// service failed or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Missing or bad settings.
    #[error("{0}")]
    Usage(String),
    /// 401 or 403.
    #[error("{0}")]
    Auth(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// Another 4xx.
    #[error("{0}")]
    Refused(String),
    /// 5xx, or no answer.
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Usage(_) => 2,
            Self::Auth(_) => 3,
            Self::NotFound(_) => 4,
            Self::Refused(_) => 5,
            Self::Unavailable(_) => 6,
        })
    }
}

/// An authenticated session with a running Tessera.
pub struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Session {
    /// Gets an access token with the client's credentials.
    pub async fn open(target: &Target) -> Result<Self, AdminError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| AdminError::Usage(format!("cannot make an HTTP client: {e}")))?;
        let res = http
            .post(format!("{}/oauth/token", target.url))
            .basic_auth(&target.client_id, Some(&target.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| unreachable(&target.url, &e))?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let why = body["error_description"].as_str().or(body["error"].as_str()).unwrap_or("refused");
            return Err(match status {
                StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => {
                    AdminError::Auth(format!(
                        "TESSERA_CLIENT_ID/TESSERA_CLIENT_SECRET: client {:?} cannot get a token: {why}",
                        target.client_id
                    ))
                }
                s => classify(s, why.to_owned()),
            });
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| AdminError::Unavailable("the token response carried no access_token".into()))?
            .to_owned();
        Ok(Self { http, url: target.url.clone(), token })
    }

    /// Sends one request; the JSON answer (or `null` for an empty one) on success.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, AdminError> {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| unreachable(&self.url, &e))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let json: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(json);
        }
        let detail = json["detail"].as_str().or(json["error_description"].as_str()).unwrap_or(&text);
        let code = json["code"].as_str().unwrap_or("");
        let msg = if code.is_empty() { format!("{status}: {detail}") } else { format!("{status} {code}: {detail}") };
        Err(match status {
            StatusCode::UNAUTHORIZED => AdminError::Auth(format!("{msg} (is the token's client still enabled?)")),
            StatusCode::FORBIDDEN => AdminError::Auth(format!("{msg} (the client needs scope admin)")),
            s => classify(s, msg),
        })
    }
}

fn classify(status: StatusCode, msg: String) -> AdminError {
    match status {
        StatusCode::NOT_FOUND => AdminError::NotFound(msg),
        s if s.is_client_error() => AdminError::Refused(msg),
        _ => AdminError::Unavailable(msg),
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> AdminError {
    AdminError::Unavailable(format!("TESSERA_URL: no answer from {url}: {e}"))
}

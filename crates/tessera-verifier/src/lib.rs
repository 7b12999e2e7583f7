//! Check Tessera access tokens and API keys inside a resource service,
//! without a call to Tessera per request, and refuse revoked credentials within a second.
//!
//! A [`Verifier`] loads Tessera's discovery document and JWKS, validates RFC 9068 access tokens
//! locally, and follows `GET /v1/revocations/stream` in the background (reconnecting and resuming
//! with `Last-Event-ID`), so that a revoked token (`jti`), sign-in (`sid`), client, user or signing
//! key is refused as soon as Tessera publishes it. API keys are checked for their checksum locally,
//! then with Tessera's `POST /v1/keys/verify`; answers are reused for a few seconds and dropped
//! when a revocation or change names the key.
//!
//! If the stream has been down longer than [`Builder::max_staleness`], the verifier refuses every
//! credential with [`Rejection::Unavailable`] (fail closed), unless built with
//! [`Builder::fail_open`].
//!
//! With the `axum` feature (default), [`VerifierLayer`] authenticates requests and the
//! [`Authenticated`] and [`Scoped`] extractors hand the principal to handlers; refusals follow
//! RFC 6750 §3.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use tessera_verifier::{RequiredScope, Scoped, Verifier, VerifierLayer};
//!
//! struct HelloRead;
//! impl RequiredScope for HelloRead {
//!     const SCOPE: &'static str = "hello:read";
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder("https://id.example.com")
//!     .client_credentials("orders-api", "its-secret") // scopes: revocations:read keys:verify
//!     .build()
//!     .await?;
//! let app: Router = Router::new()
//!     .route("/hello", get(|who: Scoped<HelloRead>| async move { format!("hello, {}", who.subject) }))
//!     .layer(VerifierLayer::new(verifier));
//! # Ok(()) }
//! ```

mod apikey;
mod client;
mod config;
mod error;
mod follow;
mod jwks;
#[cfg(feature = "axum")]
mod layer;
mod principal;
mod revoked;
mod token;
mod verifier;

pub use apikey::checksum_ok as api_key_checksum_ok;
pub use config::{Builder, JWKS_REFETCH_COOLDOWN, MAX_API_KEY_CACHE_TTL, MAX_LEEWAY};
pub use error::{Error, Rejection};
#[cfg(feature = "axum")]
pub use layer::{Authenticated, ClientIp, Refusal, RequiredScope, Scoped, VerifierLayer, VerifierService};
pub use principal::{ApiKeyInfo, Claims, Credential, Principal};
pub use verifier::{Status, Verifier};

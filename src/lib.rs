//! Tessera: a token and API-key identity service.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// unwrap/expect/panic and friends are denied crate-wide by `[lints]` in Cargo.toml.

pub mod apikeys;
pub mod app;
pub mod audit;

pub mod clients;
pub mod clock;
pub mod config;
pub mod db;

pub mod error;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod net;
pub mod passwords;
pub mod patch;
pub mod portal;
pub mod ratelimit;
pub mod redis_conn;
pub mod rekey;
pub mod revocation;
pub mod scopes;
pub mod secrets;
pub mod signin;
pub mod signing;

pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod webhooks;

pub use app::Application;
pub use config::Config;

//! Tessera: a token and API-key identity service.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod anomalies;
pub mod apikeys;
pub mod app;
pub mod audit;
pub mod auth;
pub mod clients;
pub mod clock;
pub mod config;
pub mod db;
pub mod detector;
pub mod error;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod net;
pub mod passwords;
pub mod revocation;
pub mod scopes;
pub mod secrets;
pub mod signing;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod usage;
pub mod users;

pub use app::Application;
pub use config::Config;

//! Black-box tests of the HTTP API against real Postgres (and Redis where a test says so).
//! One binary, one module per feature.
// A test or benchmark that cannot go on should stop loudly, where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod admin_lookups;
mod anomalies;
mod audit;
mod clients;
mod edge;
mod failover;
mod foundation;
mod guessing;
mod key_anomalies;
mod key_limits;
mod key_patch;
mod key_scopes;
mod keys;
mod keys_import;
mod openapi;
mod otlp;
mod outages;
mod portal;
mod read_replica;
mod redis_ha;
mod redis_proxy;
mod refresh_retry;
mod rekey;
mod revocation_stream;
mod revocations;
mod signin;
mod signing;
mod tcp_proxy;
mod tokens;
mod verifier;
mod webhooks;

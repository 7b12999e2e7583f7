//! Black-box tests of the HTTP API against real Postgres (and Redis where a test says so).
//! One binary, one module per feature.

mod helpers;

mod admin_lookups;
mod anomalies;
mod audit;
mod clients;
mod edge;
mod foundation;
mod guessing;
mod key_scopes;
mod keys;
mod openapi;
mod revocations;
mod signing;
mod tokens;

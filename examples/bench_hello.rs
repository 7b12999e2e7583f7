//! HTTP ceiling for `scripts/bench`: the smallest axum server that answers `GET /` with a
//! JWKS-sized JSON body, on the same runtime and serve call as the service (`#[tokio::main]`
//! multi-threaded runtime, `axum::serve` with connect info).
//!
//! `POST /` is a second reference, shaped like an API-key verification: it reads a JSON body
//! (axum's `Json` extractor) and answers with a verification-sized JSON body. A request with a
//! body costs hyper more than a GET (the body is handed to the handler through a channel, which
//! wakes the connection's task again), so this shows what part of the verify endpoint's distance
//! from the GET ceiling is the shape of its request rather than its own work.
//!
//! Usage: `bench_hello [ADDR] [BODY_FILE]`, or env `BENCH_HELLO_ADDR` / `BENCH_HELLO_BODY`.
//! ADDR defaults to 127.0.0.1:18099; BODY_FILE to a built-in JWKS of two P-256 keys (the shape
//! Tessera publishes: the active and the pre-published next key). `scripts/bench` passes the
//! service's own JWKS, so both serve the same bytes.
// A test or benchmark that cannot go on should stop loudly, where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    http::{header, HeaderValue},
    routing::get,
    Json, Router,
};

const DEFAULT_BODY: &str = r#"{"keys":[{"alg":"ES256","crv":"P-256","kid":"3cBkP0eaxw6I4n1nR7M1bH1I9hV2wXq9o4Jx2cT9ZkE","kty":"EC","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},{"alg":"ES256","crv":"P-256","kid":"Qm8p2l4z3yR0sV7wXn6cT1uB9dE5fG2hJ8kL0mN4oPq","kty":"EC","use":"sig","x":"WbbnZ8Bq2cQ1w0lq5XyKxW3o3h9i8gA5Rr7v6dTz1sY","y":"o3pX8mQ2yZ0bR4tN6vL1kJ9hG7fE5dC3bA1zY8xW6vU"}]}"#;

/// The size and shape of a successful verification's answer.
const VERIFY_BODY: &str = r#"{"valid":true,"key_id":"01a21291-21cd-7500-bddf-41ad5217087d","owner":"01a21291-2166-7398-be89-70c841298cba","name":"bench","scopes":["deploy"],"environment":"live","expires_at":null,"metadata":{},"rotating":false}"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .or_else(|| std::env::var("BENCH_HELLO_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:18099".into())
        .parse()
        .expect("ADDR like 127.0.0.1:18099");
    let body = match args.next().or_else(|| std::env::var("BENCH_HELLO_BODY").ok()) {
        Some(path) => Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))),
        None => Bytes::from_static(DEFAULT_BODY.as_bytes()),
    };
    let app = Router::new().route(
        "/",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body) }
        })
        .post(|Json(_): Json<serde_json::Value>| async {
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], VERIFY_BODY)
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    eprintln!("bench_hello listening on {addr}");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.expect("serve");
}

//! A resource service protected by Tessera: `GET /hello` needs scope `hello:read`, by access token
//! or API key (`Authorization: Bearer …`); `GET /public` answers the same without credentials (the
//! benchmark's baseline).
//!
//! ```sh
//! TESSERA_ISSUER=http://127.0.0.1:8080 EXAMPLE_BIND=127.0.0.1:3000 \
//! EXAMPLE_CLIENT_ID=… EXAMPLE_CLIENT_SECRET=… \
//!   cargo run -p tessera-verifier --example resource_server
//! ```
//! The client needs scopes `keys:verify revocations:read`.

use std::env;

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};
use tessera_verifier::{RequiredScope, Scoped, Verifier, VerifierLayer};

/// The scope `GET /hello` requires.
struct HelloRead;
impl RequiredScope for HelloRead {
    const SCOPE: &'static str = "hello:read";
}

async fn hello(caller: Scoped<HelloRead>) -> Json<Value> {
    Json(json!({ "hello": caller.subject }))
}

async fn public() -> Json<Value> {
    Json(json!({ "hello": "world" }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(env::var("RUST_LOG").unwrap_or_else(|_| "info".into())).init();
    let var = |name: &str| env::var(name).map_err(|_| format!("{name} is required"));
    let issuer = env::var("TESSERA_ISSUER").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let bind = env::var("EXAMPLE_BIND").unwrap_or_else(|_| "127.0.0.1:3000".into());

    let verifier = Verifier::builder(&issuer)
        .client_credentials(var("EXAMPLE_CLIENT_ID")?, var("EXAMPLE_CLIENT_SECRET")?)
        .build()
        .await?;
    let app = Router::new()
        .route("/hello", get(hello).route_layer(VerifierLayer::new(verifier)))
        .route("/public", get(public));

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!(addr = %listener.local_addr()?, %issuer, "resource server listening");
    axum::serve(listener, app).await?;
    Ok(())
}

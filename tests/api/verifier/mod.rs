//! The `tessera-verifier` crate against a real Tessera: a resource service built like
//! `examples/resource_server.rs` (`GET /hello` needs `hello:read`, `GET /public` needs nothing)
//! checks tokens and keys locally and hears revocations through `/v1/revocations/stream`.
//!
//! Tessera's issuer is a TCP proxy in front of it, so a test can cut the verifier off (stream,
//! JWKS, key checks) and let it back, like a network partition.

mod partition;
mod revocation;
mod tokens;

use std::time::Duration;

use axum::{routing::get, Json, Router};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tessera_verifier::{RequiredScope, Scoped, Verifier, VerifierLayer};

use crate::{
    helpers::*,
    tcp_proxy::Proxy,
    tokens::{password_grant, setup_login},
};

struct HelloRead;
impl RequiredScope for HelloRead {
    const SCOPE: &'static str = "hello:read";
}

/// Tessera behind its proxy, and a resource service using the verifier.
pub struct Setup {
    pub app: TestApp,
    pub proxy: Proxy,
    pub verifier: Verifier,
    /// Base URL of the resource service.
    pub service: String,
    pub http: reqwest::Client,
}

impl Setup {
    pub async fn new() -> Self {
        Self::with(|b| b).await
    }

    /// With the verifier's builder adjusted by `tune`.
    pub async fn with(tune: impl FnOnce(tessera_verifier::Builder) -> tessera_verifier::Builder) -> Self {
        Self::with_tessera(&[], tune).await
    }

    /// With Tessera's settings `env` and the verifier's builder adjusted by `tune`.
    pub async fn with_tessera(
        env: &[(&str, &str)],
        tune: impl FnOnce(tessera_verifier::Builder) -> tessera_verifier::Builder,
    ) -> Self {
        let mut proxy = Proxy::bind().await;
        let mut builder = TestAppBuilder::new().set("TESSERA_ISSUER", &proxy.url("http"));
        for (k, v) in env {
            builder = builder.set(k, v);
        }
        let app = builder.spawn().await;
        proxy.start(app.addr.trim_start_matches("http://"));
        let (id, secret) = app.create_client(&["client_credentials"], &["keys:verify", "revocations:read"]).await;
        let verifier =
            tune(Verifier::builder(&proxy.url("http")).client_credentials(id, secret)).build().await.unwrap();
        let service = serve(verifier.clone()).await;
        Self { app, proxy, verifier, service, http: reqwest::Client::new() }
    }

    /// `GET /hello` with `Authorization: Bearer <credential>`.
    pub async fn hello(&self, credential: &str) -> Response {
        self.http.get(format!("{}/hello", self.service)).bearer_auth(credential).send().await.unwrap()
    }

    /// The status of `GET /hello` with `credential`.
    pub async fn status(&self, credential: &str) -> u16 {
        self.hello(credential).await.status().as_u16()
    }

    /// A client-credentials token with `scopes`, from a new client; (token, client id, secret).
    pub async fn token(&self, scopes: &[&str]) -> (String, String, String) {
        let (id, secret) = self.app.create_client(&["client_credentials"], scopes).await;
        let res = self.app.token_for(&id, &secret, None).await;
        assert_eq!(res.status(), StatusCode::OK);
        let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        (token, id, secret)
    }

    /// A live API key with `scopes` owned by a new user; (key, key id, the owner's keys:write token).
    pub async fn api_key(&self, scopes: &[&str]) -> (String, String, String) {
        let all = ["keys:read", "keys:write"];
        let login = setup_login(&self.app, &all, &all).await;
        let res = password_grant(&self.app, &login, &login.password, None).await;
        let owner = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
        let res = self
            .app
            .post_json("/v1/keys", &owner, &json!({"name": "svc", "scopes": scopes, "environment": "live"}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let key: Value = res.json().await.unwrap();
        (key["key"].as_str().unwrap().to_owned(), key["id"].as_str().unwrap().to_owned(), owner)
    }

    /// Revokes `token` at Tessera as the client `id` it was issued to.
    pub async fn revoke_token(&self, token: &str, id: &str, secret: &str) {
        let res = self
            .app
            .http
            .post(self.app.url("/oauth/revoke"))
            .basic_auth(id, Some(secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    /// The last `seq` Tessera has sequenced.
    pub async fn tessera_seq(&self) -> i64 {
        let mut db = self.app.db().await;
        sqlx::query_scalar::<_, Option<i64>>("SELECT max(seq) FROM revocation_events")
            .fetch_one(&mut db)
            .await
            .unwrap()
            .unwrap_or(0)
    }
}

/// Serves the example's routes with `verifier` on a free port; returns its base URL.
async fn serve(verifier: Verifier) -> String {
    async fn hello(caller: Scoped<HelloRead>) -> Json<Value> {
        Json(json!({ "hello": caller.subject }))
    }
    let app = Router::new()
        .route("/hello", get(hello).route_layer(VerifierLayer::new(verifier)))
        .route("/public", get(|| async { Json(json!({ "hello": "world" })) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// What a refusal must carry: the status and an RFC 6750 challenge with `error` (or none).
pub async fn assert_refused(res: Response, status: u16, error: Option<&str>) {
    assert_eq!(res.status().as_u16(), status);
    let challenge = res.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer realm=\"tessera\""), "{challenge}");
    match error {
        Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{challenge}"),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
}

/// Revocations must be heard within this long.
pub const WITHIN: Duration = Duration::from_secs(1);

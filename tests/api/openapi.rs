//! The OpenAPI document: generated from the routes, committed, served, and rendered offline.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

const COMMITTED: &str = include_str!("../../openapi/openapi.json");

#[tokio::test]
async fn the_committed_document_matches_the_generated_and_the_served_one() {
    let generated = tessera::http::openapi::document_json();
    assert!(
        generated == COMMITTED,
        "openapi/openapi.json is stale. Regenerate it with:\n    cargo run -q -- openapi > openapi/openapi.json"
    );
    let app = spawn_app().await;
    let served: Value = app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let committed: Value = serde_json::from_str(COMMITTED).unwrap();
    assert_eq!(served, committed);
    assert!(committed["openapi"].as_str().unwrap().starts_with("3.1"));
}

#[tokio::test]
async fn every_contract_endpoint_is_documented_with_its_errors() {
    let doc: Value = serde_json::from_str(COMMITTED).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/oauth/token", "post"),
        ("/oauth/revoke", "post"),
        ("/oauth/introspect", "post"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/v1/admin/clients", "post"),
        ("/v1/admin/clients", "get"),
        ("/v1/admin/clients/{client_id}", "delete"),
        ("/v1/admin/users", "post"),
        ("/v1/admin/users/{id}", "get"),
        ("/v1/admin/signing-keys", "get"),
        ("/v1/admin/signing-keys/rotate", "post"),
        ("/v1/admin/signing-keys/{kid}/revoke", "post"),
        ("/v1/admin/audit", "get"),
        ("/v1/admin/anomalies", "get"),
        ("/v1/revocations", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} undocumented"))[method];
        assert!(op.is_object(), "{method} {path} undocumented");
        if path.starts_with("/v1/") {
            assert!(op["responses"]["401"].is_object(), "{method} {path} lacks 401");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["client_basic"]["scheme"], "basic");
}

#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_without_the_internet() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("https://"), "the page must not load anything from the internet");
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        let res = app.http.get(app.url(&format!("/docs/{asset}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }
    let init = app.http.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap().text().await.unwrap();
    assert!(init.contains("/openapi.json"));
}

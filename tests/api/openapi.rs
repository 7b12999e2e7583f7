//! The OpenAPI document: generated from the routes, committed, served, and rendered offline.

use reqwest::StatusCode;
use serde_json::{Map, Value};

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
        ("/v1/revocations/stream", "get"),
        ("/v1/keys/{id}/anomalies", "get"),
        ("/v1/keys/{id}/usage", "get"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "patch"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/test", "post"),
        ("/v1/webhooks/{id}/deliveries", "get"),
        ("/oauth/authorize", "get"),
        ("/oauth/userinfo", "get"),
        ("/oauth/userinfo", "post"),
        ("/oauth/logout", "get"),
        ("/.well-known/openid-configuration", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/v1/keys/leaks", "post"),
        ("/v1/admin/keys/import", "post"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} undocumented"))[method];
        assert!(op.is_object(), "{method} {path} undocumented");
        // Leak reports take no credential: holding a key is proof enough to report it.
        if path.starts_with("/v1/") && path != "/v1/keys/leaks" {
            assert!(op["responses"]["401"].is_object(), "{method} {path} lacks 401");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["client_basic"]["scheme"], "basic");
}

/// Schemas allowed to go without an example, each with the reason. Keep this list short: pure
/// enums and fragments carry one too (a one-line `#[schema(example = ...)]`), so nothing belongs
/// here for being small.
const WITHOUT_EXAMPLE: &[(&str, &str)] = &[];

/// The properties and required names of an object schema, following `allOf` and `$ref`s into
/// `components.schemas` (a flattened struct is an `allOf` of a `$ref` and an inline object).
fn object_fields(schemas: &Map<String, Value>, schema: &Value, props: &mut Vec<String>, required: &mut Vec<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        let resolved = schemas.get(name).unwrap_or_else(|| panic!("dangling $ref {target}"));
        return object_fields(schemas, resolved, props, required);
    }
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            object_fields(schemas, part, props, required);
        }
    }
    if let Some(p) = schema["properties"].as_object() {
        props.extend(p.keys().cloned());
    }
    if let Some(r) = schema["required"].as_array() {
        required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
    }
}

/// Issue #8: every request and response schema carries an example, and an object's example uses
/// exactly its field names (every required field present, nothing undeclared), so renaming a field
/// without its example fails here.
#[test]
fn every_schema_has_an_example_that_uses_its_field_names() {
    let doc: Value = serde_json::from_str(COMMITTED).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut problems = Vec::new();
    for (name, schema) in schemas {
        let exempt = WITHOUT_EXAMPLE.iter().any(|(n, _)| n == name);
        let Some(example) = schema.get("example").or_else(|| schema["examples"].get(0)) else {
            if !exempt {
                problems.push(format!("{name}: no example; add #[schema(example = json!({{...}}))] to its type"));
            }
            continue;
        };
        if exempt {
            problems.push(format!("{name}: has an example now; remove it from WITHOUT_EXAMPLE"));
        }
        let (mut props, mut required) = (Vec::new(), Vec::new());
        object_fields(schemas, schema, &mut props, &mut required);
        if props.is_empty() && schema["type"] != "object" {
            continue; // an enum or a oneOf fragment: any example value will do
        }
        let Some(example) = example.as_object() else {
            problems.push(format!("{name}: the example of an object schema must be an object"));
            continue;
        };
        for field in &required {
            if !example.contains_key(field) {
                problems.push(format!("{name}: the example lacks required field `{field}`"));
            }
        }
        for field in example.keys() {
            if !props.contains(field) {
                problems.push(format!("{name}: the example has `{field}`, which the schema does not declare"));
            }
        }
    }
    for (name, _) in WITHOUT_EXAMPLE {
        if !schemas.contains_key(*name) {
            problems.push(format!("{name}: listed in WITHOUT_EXAMPLE but not in the document"));
        }
    }
    assert!(problems.is_empty(), "schema examples:\n  {}", problems.join("\n  "));
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

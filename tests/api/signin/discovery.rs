//! OpenID Connect discovery and the RS256 ID-token key in the JWKS.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn the_openid_configuration_names_every_required_member() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let m: Value = res.json().await.unwrap();
    let base = "http://127.0.0.1:8080";
    assert_eq!(m["issuer"], base);
    for (member, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("end_session_endpoint", "/oauth/logout"),
        ("jwks_uri", "/.well-known/jwks.json"),
    ] {
        assert_eq!(m[member], format!("{base}{path}"), "{member}");
    }
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["subject_types_supported"], json!(["public"]));
    assert!(m["id_token_signing_alg_values_supported"].as_array().unwrap().contains(&json!("RS256")));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    for scope in ["openid", "profile", "offline_access"] {
        assert!(m["scopes_supported"].as_array().unwrap().contains(&json!(scope)), "{scope}");
    }
    for claim in ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "sid", "preferred_username"] {
        assert!(m["claims_supported"].as_array().unwrap().contains(&json!(claim)), "{claim}");
    }
    // RFC 8414's document says the same about the authorization endpoint.
    let o: Value =
        app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(o["authorization_endpoint"], format!("{base}/oauth/authorize"));
    assert_eq!(o["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(o["authorization_response_iss_parameter_supported"], true);
    assert!(o["grant_types_supported"].as_array().unwrap().contains(&json!("authorization_code")));
}

#[tokio::test]
async fn the_jwks_carries_an_rs256_key_for_id_tokens_whatever_signs_access_tokens() {
    for alg in ["ES256", "EdDSA", "RS256"] {
        let app = TestAppBuilder::new().set("TESSERA_SIGNING_ALG", alg).spawn().await;
        let jwks: Value = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert!(keys.iter().any(|k| k["alg"] == "RS256" && k["kty"] == "RSA" && k["use"] == "sig"), "{alg}: {jwks}");
        assert!(keys.iter().all(|k| k.get("d").is_none()));
        // A second instance finds the same ID-token keys: made once, by the first.
        let peer = app.spawn_peer().await;
        let again: Value =
            peer.http.get(peer.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(jwks, again);
    }
}

#[tokio::test]
async fn an_issuer_with_a_path_serves_the_openid_configuration_under_it() {
    let issuer = "http://127.0.0.1:8080/tenant";
    let app = TestAppBuilder::new().set("TESSERA_ISSUER", issuer).spawn().await;
    let res = app.http.get(app.url("/tenant/.well-known/openid-configuration")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let m: Value = res.json().await.unwrap();
    assert_eq!(m["issuer"], issuer);
    assert_eq!(m["authorization_endpoint"], format!("{issuer}/oauth/authorize"));
    let css = app.http.get(app.url("/tenant/assets/tessera.css")).send().await.unwrap();
    assert_eq!(css.status(), StatusCode::OK, "the page's stylesheet resolves under the issuer's path");
}

#[tokio::test]
async fn the_api_reference_is_an_html_page_with_the_same_policy_and_no_framing() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(
        res.headers()["content-security-policy"],
        "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    );
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}

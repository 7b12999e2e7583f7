//! Signing keys, the JWKS, discovery, and the refusal of forged tokens.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

mod jwks;
mod keys;

pub fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

pub fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    let p = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    (serde_json::from_slice(&h).unwrap(), serde_json::from_slice(&p).unwrap())
}

/// Verifies an ES256 token with nothing but the JWKS JSON and ring's P-256 verifier.
fn verify_with_jwks(jwks: &Value, token: &str) -> bool {
    let (header, _) = parts(token);
    let kid = header["kid"].as_str().unwrap();
    let Some(jwk) = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid) else { return false };
    assert_eq!(jwk["kty"], "EC");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(input.as_bytes(), &sig)
        .is_ok()
}

async fn jwks(app: &TestApp) -> Value {
    app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap()
}

async fn accepted(app: &TestApp, token: &str) -> bool {
    let res = app.get_auth("/v1/admin/clients", token).await;
    match res.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => {
            let www = res.headers().get("www-authenticate").unwrap().to_str().unwrap().to_owned();
            assert!(www.starts_with("Bearer"), "{www}");
            false
        }
        s => panic!("unexpected status {s}"),
    }
}

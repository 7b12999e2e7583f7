//! What a verifier sees: the JWKS, discovery, tokens of every algorithm, and forged tokens refused.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

#[tokio::test]
async fn a_token_verifies_against_the_published_jwks_with_an_independent_verifier() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    let (header, claims) = parts(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(verify_with_jwks(&jwks(&app).await, &token));
    for c in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"] {
        assert!(!claims[c].is_null(), "claim {c} missing: {claims}");
    }
    assert_eq!(claims["iss"], "http://127.0.0.1:8080");
}

#[tokio::test]
async fn the_jwks_has_active_and_next_keys_an_etag_and_answers_304() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cc = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cc.starts_with("public, max-age="), "{cc}");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    let keys = body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4, "the active and the next key, for access tokens and (RS256) for ID tokens: {body}");
    for k in keys {
        assert!(k.get("d").is_none(), "private part published");
        assert_eq!(k["use"], "sig");
    }
    assert_eq!(cc, "public, max-age=300", "the default TESSERA_JWKS_MAX_AGE");
    let res = app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert_eq!(res.headers()["cache-control"], cc.as_str());
    // A list of validators matches when any of them does; a stale one alone does not.
    let list = format!("\"stale\", {etag}");
    let res = app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", list).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res =
        app.http.get(app.url("/.well-known/jwks.json")).header("if-none-match", "\"stale\"").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_jwks_max_age_follows_the_configuration() {
    let app = TestAppBuilder::new().set("TESSERA_JWKS_MAX_AGE", "120").spawn().await;
    let res = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=120");
}

#[tokio::test]
async fn discovery_metadata_names_every_endpoint() {
    let app = spawn_app().await;
    let m: Value =
        app.http.get(app.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(m["issuer"], "http://127.0.0.1:8080");
    assert_eq!(m["token_endpoint"], "http://127.0.0.1:8080/oauth/token");
    assert_eq!(m["revocation_endpoint"], "http://127.0.0.1:8080/oauth/revoke");
    assert_eq!(m["introspection_endpoint"], "http://127.0.0.1:8080/oauth/introspect");
    assert_eq!(m["jwks_uri"], "http://127.0.0.1:8080/.well-known/jwks.json");
    assert!(m["grant_types_supported"].as_array().unwrap().contains(&json!("refresh_token")));
    assert!(m["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("client_secret_basic")));
    // What the endpoints accept: a public client may revoke its own tokens, never introspect.
    assert!(m["revocation_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("none")));
    assert!(!m["introspection_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("none")));
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    assert!(accepted(&app, &token).await);
    let (header, claims) = parts(&token);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let payload_b64 = input.split('.').nth(1).unwrap();
    let make = |h: Value, p: &str, s: &str| format!("{}.{}.{}", b64(h.to_string().as_bytes()), p, s);

    let mut forged = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        forged.push((format!("alg {none}"), make(json!({"alg": none, "typ": "at+jwt", "kid": kid}), payload_b64, "")));
    }
    // HS256 keyed with the public key (algorithm confusion).
    let jwks = jwks(&app).await;
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid.as_str()).unwrap().to_string();
    let h = b64(json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string().as_bytes());
    let signing_input = format!("{h}.{payload_b64}");
    let mac =
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.as_bytes()), signing_input.as_bytes());
    forged.push(("HS256 with the public key".into(), format!("{signing_input}.{}", b64(mac.as_ref()))));
    // Tampered payload.
    let mut c2 = claims.clone();
    c2["sub"] = json!("someone-else");
    forged.push((
        "tampered payload".into(),
        format!("{}.{}.{sig}", input.split('.').next().unwrap(), b64(c2.to_string().as_bytes())),
    ));
    // Stripped and truncated signatures.
    forged.push(("stripped signature".into(), format!("{input}.")));
    forged.push(("no signature part".into(), input.to_owned()));
    forged.push(("truncated signature".into(), format!("{input}.{}", &sig[..sig.len() / 2])));
    // Unknown and hostile kids, and a jku header.
    for bad_kid in ["unknown-kid", "' OR 1=1 --", "../../../etc/passwd", ""] {
        let mut h = header.clone();
        h["kid"] = json!(bad_kid);
        forged.push((format!("kid {bad_kid:?}"), make(h, payload_b64, sig)));
    }
    let mut h = header.clone();
    h["jku"] = json!("http://127.0.0.1:9/jwks.json");
    forged.push(("jku header".into(), make(h, payload_b64, sig)));
    let mut h = header.clone();
    h["typ"] = json!("JWT");
    forged.push(("typ JWT".into(), make(h, payload_b64, sig)));
    let (iid, isecret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    for (what, t) in forged {
        assert!(!accepted(&app, &t).await, "{what} was accepted");
        let res: Value = app
            .http
            .post(app.url("/oauth/introspect"))
            .basic_auth(&iid, Some(&isecret))
            .form(&[("token", t.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(res, json!({"active": false}), "{what} introspected as active");
    }
}

#[tokio::test]
async fn two_instances_publish_the_same_jwks_and_accept_each_others_tokens() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    assert_eq!(jwks(&a).await, jwks(&b).await);
    let ta = a.admin_token().await;
    let tb = b.admin_token().await;
    assert!(accepted(&b, &ta).await);
    assert!(accepted(&a, &tb).await);
}

#[tokio::test]
async fn eddsa_and_rs256_services_issue_tokens_their_jwks_verifies() {
    for alg in ["EdDSA", "RS256"] {
        let app = TestAppBuilder::new().set("TESSERA_SIGNING_ALG", alg).spawn().await;
        let token = app.admin_token().await;
        assert_eq!(parts(&token).0["alg"], alg);
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks(&app).await).unwrap();
        let kid = parts(&token).0["kid"].as_str().unwrap().to_owned();
        let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut v = jsonwebtoken::Validation::new(if alg == "EdDSA" {
            jsonwebtoken::Algorithm::EdDSA
        } else {
            jsonwebtoken::Algorithm::RS256
        });
        v.set_audience(&["http://127.0.0.1:8080"]);
        assert!(jsonwebtoken::decode::<Value>(&token, &key, &v).is_ok(), "{alg}");
        assert!(accepted(&app, &token).await);
    }
}

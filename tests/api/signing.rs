//! Signing keys, the JWKS, discovery, and the refusal of forged tokens.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

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
    assert_eq!(keys.len(), 2, "active and next: {body}");
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
async fn rotation_keeps_old_tokens_valid_and_signs_with_the_former_next_key() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let keys: Value = app.get_auth("/v1/admin/signing-keys", &admin).await.json().await.unwrap();
    let next =
        keys.as_array().unwrap().iter().find(|k| k["state"] == "next").unwrap()["kid"].as_str().unwrap().to_owned();
    let old = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    // The next key has been published for the JWKS max-age (300 s) by now.
    app.clock.advance(std::time::Duration::from_secs(300));
    let res = app.post_json("/v1/admin/signing-keys/rotate", &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let after: Value = res.json().await.unwrap();
    let state_of = |kid: &str| after.as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap()["state"].clone();
    assert_eq!(state_of(&old), "retired");
    assert_eq!(state_of(&next), "active");
    assert!(accepted(&app, &admin).await, "a token of the retired key is still valid");
    let fresh = app.admin_token().await;
    assert_eq!(parts(&fresh).0["kid"], next.as_str());
    let published = jwks(&app).await;
    let kids: Vec<&str> = published["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old.as_str()) && kids.contains(&next.as_str()) && kids.len() == 3, "{kids:?}");

    // The retired key stays published until every token it could have signed has expired (the
    // longest access-token lifetime a client may have, plus the leeway), then leaves.
    let reload = |app: &TestApp| {
        let signing = app.parts.signing.clone();
        async move { signing.reload().await.unwrap() }
    };
    let outlive = tessera::clients::MAX_CLIENT_ACCESS_TTL + tessera::signing::lifecycle::RETIRE_LEEWAY.as_secs();
    app.clock.advance(std::time::Duration::from_secs(outlive - 60));
    reload(&app).await;
    assert!(jwks(&app).await.to_string().contains(&old), "left the JWKS before its tokens could have expired");
    app.clock.advance(std::time::Duration::from_secs(61));
    reload(&app).await;
    let published = jwks(&app).await;
    let kids: Vec<&str> = published["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(!kids.contains(&old.as_str()) && kids.contains(&next.as_str()) && kids.len() == 2, "{kids:?}");
}

#[tokio::test]
async fn scheduled_rotation_runs_once_when_due_and_only_after_the_next_key_was_published_long_enough() {
    let app = TestAppBuilder::new().set("TESSERA_SIGNING_KEY_ROTATION", "3600").spawn().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let old = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    let rotate_if_due = |app: &TestApp| {
        let signing = app.parts.signing.clone();
        async move { signing.rotate_if_due().await.unwrap() }
    };
    assert_eq!(rotate_if_due(&app).await, None, "not due yet");
    app.clock.advance(std::time::Duration::from_secs(3601));
    peer.clock.advance(std::time::Duration::from_secs(3601));
    // Both instances try at once, again and again: exactly one rotation in all. (A try can also find
    // the lock held by an instance's own key maintenance and skip; the schedule retries each minute.)
    let mut rotated: Vec<String> = Vec::new();
    for _ in 0..30 {
        let (a, b) = tokio::join!(rotate_if_due(&app), rotate_if_due(&peer));
        rotated.extend([a, b].into_iter().flatten());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    assert_eq!(rotate_if_due(&app).await, None, "the new active key is not due");
    app.parts.signing.reload().await.unwrap();
    let fresh = app.admin_token().await;
    assert_eq!(parts(&fresh).0["kid"].as_str(), Some(rotated[0].as_str()));
    assert_ne!(rotated[0], old);
    assert!(jwks(&app).await.to_string().contains(&old), "the retired key stays published");
}

#[tokio::test]
async fn revoking_a_key_refuses_its_tokens_at_once_here_and_soon_on_a_peer() {
    let app = spawn_app().await;
    let peer = app.spawn_peer().await;
    let admin = app.admin_token().await;
    let kid = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    let victim = app.admin_token().await;
    let res = app.post_json(&format!("/v1/admin/signing-keys/{kid}/revoke"), &admin, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!accepted(&app, &victim).await);
    let published = jwks(&app).await;
    assert!(!published.to_string().contains(&kid));
    // Meanwhile the peer keeps issuing: never a 500 (at most a brief 503), and soon with the successor.
    let started = std::time::Instant::now();
    let mut refused = false;
    let mut peer_kid = None;
    while started.elapsed() < std::time::Duration::from_secs(4) && !(refused && peer_kid.is_some()) {
        refused = refused || !accepted(&peer, &victim).await;
        let res = peer.token_for("admin", ADMIN_SECRET, None).await;
        match res.status().as_u16() {
            200 => {
                let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
                let issued_kid = parts(&token).0["kid"].as_str().unwrap().to_owned();
                if issued_kid != kid {
                    peer_kid = Some(issued_kid);
                }
            }
            503 => {}
            s => panic!("the peer answered {s} while its signing key was being replaced"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "the peer still accepts a token of a revoked key after 4 s");
    assert!(peer_kid.is_some(), "the peer did not sign with the successor within 4 s");
    // A new active key took over, the same one on both instances.
    let fresh = app.admin_token().await;
    assert_ne!(parts(&fresh).0["kid"], kid.as_str());
    assert_eq!(parts(&fresh).0["kid"].as_str(), peer_kid.as_deref());
    assert!(accepted(&app, &fresh).await);
    // Introspection, not only /v1 bearer checks, calls the revoked key's tokens inactive.
    let (id, secret) = app.create_client(&["client_credentials"], &["introspect"]).await;
    for who in [&app, &peer] {
        let res = who
            .http
            .post(who.url("/oauth/introspect"))
            .basic_auth(&id, Some(&secret))
            .form(&[("token", victim.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.json::<Value>().await.unwrap(), json!({"active": false}));
    }
}

#[tokio::test]
async fn private_keys_are_sealed_in_the_database_and_never_shown() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let mut db = app.db().await;
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT kid, private_key_enc FROM signing_keys").fetch_all(&mut db).await.unwrap();
    let wrap = tessera::secrets::MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([42u8; 32]))
        .unwrap()
        .derive_keys()
        .signing_key_wrap;
    let listing = app.get_auth("/v1/admin/signing-keys", &admin).await.text().await.unwrap();
    let jwks = jwks(&app).await.to_string();
    let logs = captured_logs();
    let pg_dump = app.pg_dump();
    for (kid, sealed) in rows {
        let der = tessera::secrets::open(&wrap, kid.as_bytes(), &sealed).expect("sealed under the master key");
        // pg_dump writes bytea as hex: neither the document nor its base64 forms appear.
        assert!(pg_dump.contains(&kid), "pg_dump holds the key rows");
        assert!(!pg_dump.contains(&hex::encode(&der)));
        assert!(
            !pg_dump.contains(&b64(&der)) && !pg_dump.contains(&base64::engine::general_purpose::STANDARD.encode(&der))
        );
        // The PKCS#8 document never appears in the clear: not in the column, responses or logs.
        assert!(!sealed.windows(der.len()).any(|w| w == der.as_slice()));
        for text in [&listing, &jwks, &logs] {
            assert!(!text.contains(&b64(&der)));
            assert!(!text.contains(&base64::engine::general_purpose::STANDARD.encode(&der)));
        }
    }
    assert!(!listing.contains("private"));
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

#[tokio::test]
async fn signing_key_actions_refuse_unknown_fields_and_accept_an_empty_body() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let kid = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    let rotate = app.url("/v1/admin/signing-keys/rotate");
    let revoke = app.url(&format!("/v1/admin/signing-keys/{kid}/revoke"));
    for url in [&rotate, &revoke] {
        let res = app.http.post(url.as_str()).bearer_auth(&admin).json(&json!({"force": true})).send().await.unwrap();
        assert_problem(res, 400, "INVALID_REQUEST").await;
    }
    // An empty JSON object and no body at all are both fine.
    app.clock.advance(std::time::Duration::from_secs(300));
    let res = app.http.post(rotate.as_str()).bearer_auth(&admin).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.http.post(format!("{rotate}?force=true")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // An unknown query parameter is refused like an unknown field.
    let res = app.http.post(format!("{rotate}?forse=true")).bearer_auth(&admin).send().await.unwrap();
    assert_problem(res, 400, "INVALID_REQUEST").await;
}

#[tokio::test]
async fn rotating_again_before_the_next_key_outlived_the_jwks_max_age_is_409_unless_forced() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let rotate = app.url("/v1/admin/signing-keys/rotate");
    let post = |url: String| app.http.post(url).bearer_auth(&admin).send();
    let keys = |res: reqwest::Response| async move {
        let list: Value = res.json().await.unwrap();
        let kid = |state: &str| {
            list.as_array().unwrap().iter().find(|k| k["state"] == state).unwrap()["kid"].as_str().unwrap().to_owned()
        };
        (kid("active"), kid("next"))
    };
    // The next key made at start is young: refused, with when it may sign.
    let started = app.clock.now();
    let res = post(rotate.clone()).await.unwrap();
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((299..=300).contains(&retry), "Retry-After {retry}");
    let body = assert_problem(res, 409, "NEXT_KEY_TOO_NEW").await;
    let not_before = time::OffsetDateTime::parse(
        body["not_before"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(not_before > started && not_before <= started + time::Duration::seconds(300), "{body}");

    // Forced, it rotates; the next key it makes is as young as can be, so a second rotation in a
    // row is refused (the report's case: a key active 10 ms after it was published).
    let (active, next) = keys(post(format!("{rotate}?force=true")).await.unwrap()).await;
    let res = post(rotate.clone()).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "300");
    assert_problem(res, 409, "NEXT_KEY_TOO_NEW").await;
    let jwks: Value = app.http.get(app.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert!(jwks.to_string().contains(&next), "the next key is published while it waits");

    // Still too new one second before the max-age; due at it.
    app.clock.advance(std::time::Duration::from_secs(299));
    let res = post(rotate.clone()).await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    assert_problem(res, 409, "NEXT_KEY_TOO_NEW").await;
    app.clock.advance(std::time::Duration::from_secs(1));
    let res = post(rotate.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (now_active, _) = keys(res).await;
    assert_eq!(now_active, next, "the key published for the max-age became active");
    assert_ne!(now_active, active);
}

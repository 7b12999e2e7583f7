//! The signing keys' life: rotation (scheduled, forced, refused too early), revocation on every
//! instance, private keys sealed, the admin actions.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

use super::*;

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
    // Retired, active and next, of the access-token keys and of the ID-token keys that rotate with them.
    assert!(kids.contains(&old.as_str()) && kids.contains(&next.as_str()) && kids.len() == 6, "{kids:?}");

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
    assert!(!kids.contains(&old.as_str()) && kids.contains(&next.as_str()) && kids.len() == 4, "{kids:?}");
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
        // Pacing, not a wait for a condition: the tries are spread over about 600 ms on purpose,
        // and what is asserted is that none after the first rotates again.
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
    let refused = std::cell::Cell::new(false);
    let peer_kid = std::cell::RefCell::new(None);
    let (refused_ref, peer_kid_ref, peer_ref, victim_ref, kid_ref) = (&refused, &peer_kid, &peer, &victim, &kid);
    let within = std::time::Duration::from_secs(4);
    eventually(within, "the peer refuses the revoked key's token and signs with the successor", move || async move {
        if !refused_ref.get() && !accepted(peer_ref, victim_ref).await {
            refused_ref.set(true);
        }
        let res = peer_ref.token_for("admin", ADMIN_SECRET, None).await;
        match res.status().as_u16() {
            200 => {
                let token = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
                let issued_kid = parts(&token).0["kid"].as_str().unwrap().to_owned();
                if issued_kid != *kid_ref {
                    *peer_kid_ref.borrow_mut() = Some(issued_kid);
                }
            }
            503 => {}
            s => panic!("the peer answered {s} while its signing key was being replaced"),
        }
        // (refused, the successor's kid)
        let seen = (refused_ref.get(), peer_kid_ref.borrow().clone());
        if seen.0 && seen.1.is_some() {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;
    let peer_kid = peer_kid.into_inner();
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
    let sealer = tessera::app::derived_keys(&tessera::config::Config::from_map(&app.env).unwrap()).unwrap().sealer;
    let listing = app.get_auth("/v1/admin/signing-keys", &admin).await.text().await.unwrap();
    let jwks = jwks(&app).await.to_string();
    let logs = captured_logs();
    let pg_dump = app.pg_dump();
    for (kid, sealed) in rows {
        let opened = sealer.open(kid.as_bytes(), &sealed).expect("sealed under the master key");
        assert!(!opened.under_previous);
        let der = opened.plaintext;
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

#[tokio::test]
async fn revoking_an_unknown_key_is_404_and_a_revoked_one_again_is_200() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let res = app.post_json("/v1/admin/signing-keys/no-such-kid/revoke", &admin, &json!({})).await;
    assert_problem(res, 404, "NOT_FOUND").await;
    let keys: Value = app.get_auth("/v1/admin/signing-keys", &admin).await.json().await.unwrap();
    let next =
        keys.as_array().unwrap().iter().find(|k| k["state"] == "next").unwrap()["kid"].as_str().unwrap().to_owned();
    let url = format!("/v1/admin/signing-keys/{next}/revoke");
    assert_eq!(app.post_json(&url, &admin, &json!({})).await.status(), StatusCode::OK);
    assert_eq!(app.post_json(&url, &admin, &json!({})).await.status(), StatusCode::OK, "already revoked");
}

//! Tokens and keys that pass, and the RFC 6750 refusals of those that do not.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::*;

/// `token` with its header changed by `edit` (the signature left as it was).
fn with_header(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut parts = token.split('.');
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    edit(&mut header);
    let rest: Vec<&str> = parts.collect();
    format!("{}.{}", URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()), rest.join("."))
}

#[tokio::test]
async fn a_valid_token_passes_and_refusals_carry_rfc_6750_challenges() {
    let s = Setup::new().await;
    let (token, client_id, _) = s.token(&["hello:read"]).await;
    let res = s.hello(&token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"hello": client_id}));

    let res = s.http.get(format!("{}/hello", s.service)).send().await.unwrap();
    assert_refused(res, 401, None).await;
    let (other, _, _) = s.token(&["keys:read"]).await;
    let res = s.hello(&other).await;
    assert_refused(res, 403, Some("insufficient_scope")).await;
    let challenge = s.hello(&other).await.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("scope=\"hello:read\""), "{challenge}");
    assert_refused(s.hello("abc.def.ghi").await, 401, Some("invalid_token")).await;
    let res = s.http.get(format!("{}/hello", s.service)).header("authorization", "Bearer a b").send().await.unwrap();
    assert_refused(res, 400, Some("invalid_request")).await;

    // RFC 9068 §4 and RFC 8725 §2.1: the type must be at+jwt, the algorithm the key's own.
    for forged in [
        with_header(&token, |h| h["typ"] = json!("JWT")),
        with_header(&token, |h| h["alg"] = json!("none")),
        with_header(&token, |h| h["alg"] = json!("HS256")),
        with_header(&token, |h| h["alg"] = json!("RS256")),
        format!("{}.", token.rsplit_once('.').unwrap().0),
    ] {
        assert_refused(s.hello(&forged).await, 401, Some("invalid_token")).await;
    }
    // A token for another audience is refused.
    let admin = s.app.admin_token().await;
    let res = s
        .app
        .post_json(
            "/v1/admin/clients",
            &admin,
            &json!({"name": "other", "grant_types": ["client_credentials"], "scopes": ["hello:read"], "audience": "https://elsewhere.example"}),
        )
        .await;
    let c: Value = res.json().await.unwrap();
    let res = s.app.token_for(c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap(), None).await;
    let elsewhere = res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    assert_refused(s.hello(&elsewhere).await, 401, Some("invalid_token")).await;
    // The unprotected route needs nothing.
    let res = s.http.get(format!("{}/public", s.service)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_valid_api_key_passes_and_a_mistyped_one_is_refused() {
    let s = Setup::new().await;
    let (key, _, _) = s.api_key(&["hello:read"]).await;
    let res = s.hello(&key).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.status(&key).await, 200, "and again, from the answer cache");
    let (narrow, _, _) = s.api_key(&["other"]).await;
    assert_refused(s.hello(&narrow).await, 403, Some("insufficient_scope")).await;
    // One character changed: the checksum fails locally.
    let mut typo = key.clone().into_bytes();
    typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert!(!tessera_verifier::api_key_checksum_ok(&typo));
    assert!(tessera_verifier::api_key_checksum_ok(&key), "the crate computes Tessera's checksum");
    assert_refused(s.hello(&typo).await, 401, Some("invalid_token")).await;
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_jwks_refetch_not_one_per_request() {
    let s = Setup::new().await;
    let (token, _, _) = s.token(&["hello:read"]).await;
    assert_eq!(s.status(&token).await, 200);
    let before = s.verifier.status().jwks_fetches;
    let forged: Vec<String> =
        (0..20).map(|i| with_header(&token, |h| h["kid"] = json!(format!("unknown-{i}")))).collect();
    let statuses = futures::future::join_all(forged.iter().map(|t| s.status(t))).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    for t in &forged {
        assert_eq!(s.status(t).await, 401);
    }
    assert_eq!(s.verifier.status().jwks_fetches, before + 1, "one refetch for forty requests");
    assert_eq!(s.status(&token).await, 200, "known keys are unaffected");
}

#[tokio::test]
async fn the_jwks_is_refetched_only_once_its_max_age_has_passed() {
    let s = Setup::with_tessera(&[("TESSERA_JWKS_MAX_AGE", "2")], |b| b).await;
    let (token, _, _) = s.token(&["hello:read"]).await;
    let started = std::time::Instant::now();
    let first = s.verifier.status().jwks_fetches;
    assert_eq!(first, 1, "loaded once at start");
    for _ in 0..3 {
        let (fresh, _, _) = s.token(&["hello:read"]).await;
        assert_eq!(s.status(&fresh).await, 200);
    }
    assert_eq!(s.status(&token).await, 200);
    if started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(s.verifier.status().jwks_fetches, first, "fresh for max-age=2: not fetched again");
    }
    // A token seen before is served from the verified-token cache without the key set; a new one
    // looks its key up, which refreshes a stale set (in the background).
    eventually(Duration::from_secs(10), "refreshed once stale", || async {
        let (fresh, _, _) = s.token(&["hello:read"]).await;
        assert_eq!(s.status(&fresh).await, 200);
        s.verifier.status().jwks_fetches > first
    })
    .await;
}

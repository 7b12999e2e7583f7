//! Endpoints: the secret shown once and sealed at rest, validation, who sees what, and the SSRF
//! guard at creation.

use super::*;

#[tokio::test]
async fn an_endpoint_secret_is_shown_once_sealed_at_rest_and_never_listed() {
    let app = spawn_private_ok().await;
    let admin = app.admin_token().await;
    let res = app
        .post_json(
            "/v1/webhooks",
            &admin,
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["api_key.revoked"], "description": "ops"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    let secret = body["secret"].as_str().unwrap();
    let raw = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    assert_eq!(raw.len(), 32);
    assert_eq!(body["events"], json!(["api_key.revoked"]));
    assert_eq!(body["enabled"], true);
    let id = body["id"].as_str().unwrap();

    let one: Value = app.get_auth(&format!("/v1/webhooks/{id}"), &admin).await.json().await.unwrap();
    assert!(one.get("secret").is_none());
    let all: Value = app.get_auth("/v1/webhooks", &admin).await.json().await.unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert!(!all.to_string().contains(secret));
    // Neither the secret nor its base64 body is stored or logged in the clear.
    let b64 = secret.strip_prefix("whsec_").unwrap();
    assert!(!app.pg_dump().contains(b64));
    assert!(!captured_logs().contains(b64));
}

#[tokio::test]
async fn bad_urls_and_unknown_events_are_400_naming_the_field() {
    let app = spawn_private_ok().await;
    let admin = app.admin_token().await;
    for (body, field) in [
        (json!({"url": "ftp://example.com/x", "events": ["api_key.revoked"]}), "url"),
        (json!({"url": "file:///etc/passwd", "events": ["api_key.revoked"]}), "url"),
        (json!({"url": "not a url", "events": ["api_key.revoked"]}), "url"),
        (json!({"url": "https://example.com/x", "events": ["api_key.exploded"]}), "events"),
        (json!({"url": "https://example.com/x", "events": []}), "events"),
    ] {
        let res = app.post_json("/v1/webhooks", &admin, &body).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let p: Value = res.json().await.unwrap();
        assert_eq!(p["code"], "INVALID_REQUEST");
        assert!(p["detail"].as_str().unwrap().starts_with(field), "{p}");
    }
    let res = app
        .post_json(
            "/v1/webhooks",
            &admin,
            &json!({"url": "https://example.com/x", "events": ["api_key.revoked"], "secret": "mine"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn internal_destinations_are_refused_unless_allowed() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://2130706433/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://100.64.1.1/",
        "http://[fd12::1]/",
        "http://localhost/hook",
    ] {
        let res = app.post_json("/v1/webhooks", &admin, &json!({"url": url, "events": ["api_key.revoked"]})).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{url}");
        let p: Value = res.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains("private"), "{p}");
    }
    // A public address is accepted; moving it inside later is refused as well.
    let (id, _) = endpoint(&app, &admin, "https://93.184.216.34/hook", &["api_key.revoked"]).await;
    let res = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"url": "http://192.168.0.10/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn developers_see_and_change_only_their_own_endpoints() {
    let app = spawn_private_ok().await;
    let alice = app.token_with_scopes(&["keys:write"]).await;
    let bob = app.token_with_scopes(&["keys:write"]).await;
    let reader = app.token_with_scopes(&["keys:read"]).await;
    let (id, _) = endpoint(&app, &alice, "http://127.0.0.1:9/a", &["api_key.created"]).await;
    assert_eq!(app.get_auth(&format!("/v1/webhooks/{id}"), &bob).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get_auth("/v1/webhooks", &reader).await.status(), StatusCode::FORBIDDEN);
    let listed: Value = app.get_auth("/v1/webhooks", &bob).await.json().await.unwrap();
    assert_eq!(listed, json!([]));

    let patch = |token: &str, body: Value| {
        app.http.patch(app.url(&format!("/v1/webhooks/{id}"))).bearer_auth(token.to_owned()).json(&body).send()
    };
    assert_eq!(patch(&bob, json!({"enabled": false})).await.unwrap().status(), StatusCode::NOT_FOUND);
    let res = patch(&alice, json!({"enabled": false, "events": ["api_key.revoked", "api_key.leaked"]})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["enabled"], false);
    assert_eq!(body["events"], json!(["api_key.revoked", "api_key.leaked"]));
    assert_eq!(patch(&alice, json!({"events": ["nope"]})).await.unwrap().status(), StatusCode::BAD_REQUEST);

    assert_eq!(app.delete_auth(&format!("/v1/webhooks/{id}"), &bob).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete_auth(&format!("/v1/webhooks/{id}"), &alice).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_auth(&format!("/v1/webhooks/{id}"), &alice).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn endpoints_are_listed_in_pages_with_a_next_link() {
    let app = spawn_private_ok().await;
    let admin = app.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(endpoint(&app, &admin, &format!("http://127.0.0.1:9/{i}"), &["api_key.created"]).await.0);
    }
    let res = app.get_auth("/v1/webhooks?limit=2", &admin).await;
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    let page: Value = res.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect::<Vec<_>>(), ids[..2]);
    let next = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    let res = app.get_auth(&next, &admin).await;
    assert!(res.headers().get("link").is_none());
    let page: Value = res.json().await.unwrap();
    assert_eq!(page[0]["id"], ids[2].as_str());
    assert_eq!(app.get_auth("/v1/webhooks?limit=0", &admin).await.status(), StatusCode::BAD_REQUEST);
}

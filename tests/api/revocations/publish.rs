//! What reaches the bus: every kind of revocation, only once committed, and never a forged one.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    signing::parts,
    tokens::{password_grant, setup_login},
};

use super::*;

#[tokio::test]
async fn every_revocation_kind_is_published_on_the_channel_and_the_stream() {
    let app = TestAppBuilder::new().with_redis().spawn().await;
    let prefix = prefix(&app);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(format!("{prefix}:revocations")).await.unwrap();

    let admin = app.admin_token().await;
    let l = setup_login(&app, &["a"], &["a"]).await;
    let login: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let at = login["access_token"].as_str().unwrap().to_owned();
    let jti = parts(&at).1["jti"].as_str().unwrap().to_owned();
    let family = parts(&at).1["sid"].as_str().unwrap().to_owned();
    let revoke = |token: String| {
        let (http, url, id, secret) =
            (app.http.clone(), app.url("/oauth/revoke"), l.client_id.clone(), l.secret.clone());
        async move { http.post(url).basic_auth(id, Some(secret)).form(&[("token", token)]).send().await.unwrap() }
    };
    assert_eq!(revoke(at.clone()).await.status(), StatusCode::OK);
    assert_eq!(revoke(login["refresh_token"].as_str().unwrap().to_owned()).await.status(), StatusCode::OK);
    // A second session stays live until the user is deleted, which must end it with an event of its own.
    let second: Value = password_grant(&app, &l, &l.password, None).await.json().await.unwrap();
    let second_family = parts(second["access_token"].as_str().unwrap()).1["sid"].as_str().unwrap().to_owned();
    let keys_writer = app.token_with_scopes(&["keys:write"]).await;
    let key: Value = app
        .post_json("/v1/keys", &keys_writer, &json!({"name": "k", "scopes": [], "environment": "live"}))
        .await
        .json()
        .await
        .unwrap();
    let key_id = key["id"].as_str().unwrap().to_owned();
    let res = app.post_json(&format!("/v1/keys/{key_id}/revoke"), &keys_writer, &json!({"reason": "leaked"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let kid = parts(&admin).0["kid"].as_str().unwrap().to_owned();
    let (victim, _) = app.create_client(&["client_credentials"], &[]).await;
    assert_eq!(app.delete_auth(&format!("/v1/admin/clients/{victim}"), &admin).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.delete_auth(&format!("/v1/admin/users/{}", l.user_id), &admin).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post_json(&format!("/v1/admin/signing-keys/{kid}/revoke"), &admin, &json!({})).await.status(),
        StatusCode::OK
    );

    let mut received = Vec::new();
    let mut messages = pubsub.on_message();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while received.len() < 7 {
        let msg = tokio::time::timeout_at(deadline, messages.next()).await.expect("7 events within 5 s").unwrap();
        received.push(serde_json::from_str::<Value>(&msg.get_payload::<String>().unwrap()).unwrap());
    }
    let on_stream = stream_events(&redis_url(), &format!("{prefix}:revocations:stream")).await;
    assert_eq!(on_stream, received, "stream and channel carry the same events in the same order");

    let seqs: Vec<i64> = received.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    let by_kind = |k: &str| received.iter().filter(|e| e["kind"] == k).cloned().collect::<Vec<_>>();
    let access = by_kind("access_token");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["jti"], jti.as_str());
    assert_eq!(access[0]["id"], jti.as_str());
    assert!(access[0]["expires_at"].is_string());
    let fam = by_kind("refresh_family");
    assert_eq!(fam.len(), 2, "{fam:?}");
    assert_eq!(fam[0]["id"], family.as_str());
    assert_eq!(fam[1]["id"], second_family.as_str());
    assert_eq!(fam[1]["reason"], "user deleted");
    assert!(fam[1]["expires_at"].is_string(), "a family event carries the family's absolute expiry");
    let api_key = by_kind("api_key");
    assert_eq!(api_key.len(), 1);
    assert_eq!(api_key[0]["id"], key_id.as_str());
    assert_eq!(api_key[0]["reason"], "leaked");
    assert_eq!(by_kind("client")[0]["id"], victim.as_str());
    assert_eq!(by_kind("user")[0]["id"], l.user_id.as_str());
    let sk = by_kind("signing_key");
    assert_eq!(sk[0]["kid"], kid.as_str());
    for e in &received {
        let revoked_at = e["revoked_at"].as_str().unwrap();
        assert!(time::OffsetDateTime::parse(revoked_at, &time::format_description::well_known::Rfc3339).is_ok());
        let allowed: HashSet<&str> = ["seq", "kind", "id", "jti", "kid", "expires_at", "revoked_at", "reason"].into();
        assert!(e.as_object().unwrap().keys().all(|k| allowed.contains(k.as_str())), "{e}");
    }

    // The same events, by catch-up.
    let reader = app.token_with_scopes(&["revocations:read"]).await;
    let page = revocations_page(&app, &reader, 0, 100).await;
    assert_eq!(page["events"].as_array().unwrap(), &received);
    assert_eq!(page["next_after"], *seqs.last().unwrap());
    let weak = app.token_with_scopes(&["keys:read"]).await;
    assert_problem(app.get_auth("/v1/revocations", &weak).await, 403, "INSUFFICIENT_SCOPE").await;
}

/// A published `seq` must already be committed: were numbering and publishing one transaction, a
/// relay dying between the two would let the numbers be given again to other events, which every
/// consumer that applied the first ones would then skip. So each event that reaches the bus must
/// be visible, with its number, to any other connection at that moment.
#[tokio::test]
async fn an_event_is_published_only_after_its_sequence_number_is_committed() {
    let app = spawn_app().await;
    let mut rx = app.parts.bus.subscribe();
    let mut db = app.db().await;
    let keys_writer = app.token_with_scopes(&["keys:write"]).await;
    for round in 0..5 {
        let key: Value = app
            .post_json(
                "/v1/keys",
                &keys_writer,
                &json!({"name": format!("k{round}"), "scopes": [], "environment": "live"}),
            )
            .await
            .json()
            .await
            .unwrap();
        let id = key["id"].as_str().unwrap().to_owned();
        let res = app.post_json(&format!("/v1/keys/{id}/revoke"), &keys_writer, &json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let seq = loop {
            let msg =
                tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("an event within 5 s").unwrap();
            if let tessera::revocation::bus::BusMessage::Event(payload) = msg {
                let ev: Value = serde_json::from_str(&payload).unwrap();
                if ev["id"] == id.as_str() {
                    break ev["seq"].as_i64().unwrap();
                }
            }
        };
        let committed: Option<String> =
            sqlx::query_scalar("SELECT subject_id::text FROM revocation_events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&mut db)
                .await
                .unwrap();
        assert_eq!(
            committed.as_deref(),
            Some(id.as_str()),
            "round {round}: seq {seq} was published before it was committed"
        );
    }
}

/// The bus only says *that* something changed. A message forged with the next `seq` (as another
/// deployment on the same Redis would send by accident) names an innocent client; then a real
/// access token is revoked on A. B must refuse the revoked token within a second and keep
/// accepting the innocent client's tokens: nothing read from Redis is applied as fact.
#[tokio::test]
async fn a_forged_bus_message_neither_invents_a_revocation_nor_hides_a_real_one() {
    let a = TestAppBuilder::new().with_redis().spawn().await;
    let b = a.spawn_peer().await;
    let (innocent_id, innocent_secret) = a.create_client(&["client_credentials"], &["revocations:read"]).await;
    let innocent: Value = a.token_for(&innocent_id, &innocent_secret, None).await.json().await.unwrap();
    let innocent = innocent["access_token"].as_str().unwrap().to_owned();
    let victim = a.admin_token().await;
    assert_eq!(b.get_auth("/v1/revocations", &innocent).await.status(), StatusCode::OK);
    assert_eq!(b.get_auth("/v1/admin/clients", &victim).await.status(), StatusCode::OK);

    // B has applied everything there is; the forged message takes the next number.
    let last = tessera::revocation::last_seq(&a.parts.db).await.unwrap();
    eventually(Duration::from_secs(5), "B applies every committed event", || async {
        b.parts.revoked.applied_seq() >= last
    })
    .await;
    let mut seen_by_b = b.parts.bus.subscribe();
    let forged = json!({"seq": last + 1, "kind": "client", "id": innocent_id, "revoked_at": "2026-01-01T00:00:00Z"});
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{}:revocations", prefix(&a)))
        .arg(forged.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    // B's subscriber has handed the message to its consumers.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(seen_by_b.recv().await, Ok(tessera::revocation::bus::BusMessage::Event(_))) {}
    })
    .await
    .expect("B received the forged message");

    let res = a
        .http
        .post(a.url("/oauth/revoke"))
        .basic_auth("admin", Some(ADMIN_SECRET))
        .form(&[("token", victim.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let revoked = Instant::now();
    eventually(Duration::from_secs(1), "B refuses the really revoked token", || async {
        b.get_auth("/v1/admin/clients", &victim).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(revoked.elapsed() < Duration::from_secs(1));
    assert_eq!(
        b.get_auth("/v1/revocations", &innocent).await.status(),
        StatusCode::OK,
        "B applied the forged revocation of an innocent client"
    );
    assert!(!b.parts.revoked.client_revoked(&innocent_id));
}

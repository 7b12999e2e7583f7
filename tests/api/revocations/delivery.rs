//! Getting revocations to every instance: through Redis, through catch-up paging, and across a
//! Redis outage or a stopped instance.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{
    helpers::*,
    tokens::{password_grant, setup_login},
};

use super::*;

#[tokio::test]
async fn events_committed_while_redis_is_down_are_delivered_in_order_after_it_returns() {
    let mut redis_srv = OwnRedis::start().await;
    let a = TestAppBuilder::new().set("TESSERA_REDIS_URL", &redis_srv.url()).spawn().await;
    let b = a.spawn_peer().await;
    let reader = a.token_with_scopes(&["revocations:read"]).await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    // Wait until Redis is seen as up, then take it away.
    let ready: Value = a.http.get(a.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["redis"], "up");
    redis_srv.kill();

    let mut tokens = Vec::new();
    for _ in 0..5 {
        let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
        let rt = login["refresh_token"].as_str().unwrap().to_owned();
        let res = a
            .http
            .post(a.url("/oauth/revoke"))
            .basic_auth(&l.client_id, Some(&l.secret))
            .form(&[("token", rt.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "revocations commit while Redis is down");
        tokens.push(login["access_token"].as_str().unwrap().to_owned());
    }
    let ready = a.http.get(a.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "Postgres is up: still ready");
    assert_eq!(ready.json::<Value>().await.unwrap()["redis"], "down");
    // The peer converges without Redis too (catch-up from Postgres).
    for t in &tokens {
        eventually(Duration::from_secs(4), "the peer refuses a token revoked while Redis was down", || async {
            b.get_auth("/v1/revocations", t).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }

    // Redis returns on the same port: everything is published, in seq order.
    let redis_srv = OwnRedis::start_on(redis_srv.port).await;
    let key = format!("{}:revocations:stream", prefix(&a));
    let delivered = eventually(Duration::from_secs(10), "five events on the stream", || async {
        let got = stream_events(&redis_srv.url(), &key).await;
        if got.len() >= 5 {
            Ok(got)
        } else {
            Err(got)
        }
    })
    .await;
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    let seqs: Vec<i64> = delivered.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let page = revocations_page(&a, &reader, 0, 100).await;
    let expected: Vec<i64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, expected, "published in seq order, none lost");
}

#[tokio::test]
async fn paging_by_after_never_skips_or_repeats_under_concurrent_revocations_from_two_instances() {
    let a = spawn_app().await;
    let b = a.spawn_peer().await;
    let reader = a.token_with_scopes(&["revocations:read"]).await;
    let l = setup_login(&a, &["a"], &["a"]).await;
    // Tokens to revoke: access tokens (cheap to mint, each revocation one event).
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
        tokens.push(login["refresh_token"].as_str().unwrap().to_owned());
    }
    let (cc_id, cc_secret) = a.create_client(&["client_credentials"], &["x"]).await;
    for _ in 0..56 {
        let t: Value = a.token_for(&cc_id, &cc_secret, None).await.json().await.unwrap();
        tokens.push(t["access_token"].as_str().unwrap().to_owned());
    }
    let total = tokens.len();

    // A reader pages concurrently while both instances revoke.
    let reader_task = {
        let (http, url, token) = (a.http.clone(), a.addr.clone(), reader.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            let started = Instant::now();
            while seen.len() < total && started.elapsed() < Duration::from_secs(20) {
                let page: Value = http
                    .get(format!("{url}/v1/revocations?after={after}&limit=7"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for e in page["events"].as_array().unwrap() {
                    seen.push(e["seq"].as_i64().unwrap());
                }
                after = page["next_after"].as_i64().unwrap();
                // Pacing, not a wait for a condition: the reader keeps paging while the revocations
                // are written, so that pages interleave with commits (the loop's own bound above
                // ends it; the assertions below check what it saw).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    let mut tasks = Vec::new();
    for (i, t) in tokens.into_iter().enumerate() {
        let base = if i % 2 == 0 { a.addr.clone() } else { b.addr.clone() };
        let (http, id, secret) = (
            a.http.clone(),
            if i < 4 { l.client_id.clone() } else { cc_id.clone() },
            if i < 4 { l.secret.clone() } else { cc_secret.clone() },
        );
        tasks.push(tokio::spawn(async move {
            http.post(format!("{base}/oauth/revoke"))
                .basic_auth(id, Some(secret))
                .form(&[("token", t)])
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let seen = reader_task.await.unwrap();
    assert_eq!(seen.len(), total, "the reader saw every event exactly once");
    let expected: Vec<i64> = (1..=total as i64).collect();
    assert_eq!(seen, expected, "contiguous, increasing, no gap, no repeat");
}

#[tokio::test]
async fn through_redis_a_second_instance_refuses_revoked_keys_within_a_second_and_a_survivor_keeps_publishing() {
    let redis_srv = OwnRedis::start().await;
    let a = TestAppBuilder::new().set("TESSERA_REDIS_URL", &redis_srv.url()).spawn().await;
    let b = a.spawn_peer().await;
    let scopes = ["keys:read", "keys:write", "keys:verify"];
    let l = setup_login(&a, &scopes, &scopes).await;
    let login: Value = password_grant(&a, &l, &l.password, None).await.json().await.unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let stream = format!("{}:revocations:stream", prefix(&a));

    for round in 0..5 {
        let (id, key) = new_key(&a, &token).await;
        assert_eq!(verify_code(&b, &token, &key).await, "VALID", "round {round}: B has the key cached as valid");
        let res = a.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await;
        assert_eq!(res.status(), StatusCode::OK);
        eventually(Duration::from_secs(1), &format!("round {round}: B refuses the revoked key"), || async {
            let got = verify_code(&b, &token, &key).await;
            if got == "REVOKED" {
                Ok(())
            } else {
                Err(got)
            }
        })
        .await;
    }

    // One instance goes away (B: A owns the test database); A's revocations still reach the stream,
    // whichever of the two was relaying before.
    let before = eventually(Duration::from_secs(5), "one stream entry per revoked key", || async {
        let n = stream_events(&redis_srv.url(), &stream).await.len();
        if n == 5 {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .await;
    assert_eq!(before, 5, "one stream entry per revoked key");
    b.stop().await;
    let (id, _) = new_key(&a, &token).await;
    let res = a.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let events = eventually(Duration::from_secs(5), "something published after the first instance stopped", || async {
        let events = stream_events(&redis_srv.url(), &stream).await;
        (events.len() > before).then_some(events)
    })
    .await;
    assert_eq!(events.len(), before + 1, "{events:?}");
    assert_eq!(events[before]["id"], id.as_str(), "{events:?}");
}

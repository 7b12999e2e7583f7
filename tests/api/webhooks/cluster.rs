//! Several instances on one database: each delivery is sent once, and one left unsent by a
//! stopped instance is sent by another.

use super::*;

#[tokio::test]
async fn one_revocation_on_two_instances_is_delivered_exactly_once() {
    let app = spawn_private_ok().await;
    let peer = app.spawn_peer().await;
    let rx = Receiver::start().await;
    let admin = app.admin_token().await;
    let (id, _) = endpoint(&app, &admin, &rx.url, &["api_key.revoked"]).await;
    let writer = app.token_with_scopes(&["keys:write"]).await;
    for _ in 0..5 {
        let key = new_key(&peer, &writer, json!({})).await;
        revoke_key(&peer, &writer, key["id"].as_str().unwrap()).await;
    }
    rx.wait_for("api_key.revoked", 5, Duration::from_secs(10)).await;
    // Both dispatchers poll every second and are woken by every write: give them a few chances
    // to send anything twice, then count.
    let mut db = app.db().await;
    eventually(Duration::from_secs(10), "every delivery is marked delivered", || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'")
            .fetch_one(&app.parts.db)
            .await
            .unwrap();
        pending == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = rx.of_type("api_key.revoked");
    let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (5, 5), "each event exactly once");
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_attempts WHERE endpoint_id = $1::uuid")
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(attempts, 5);
}

#[tokio::test]
async fn a_delivery_cut_off_by_a_stopping_instance_is_sent_by_another() {
    let app = spawn_private_ok().await;
    // The event is made on an instance whose clock runs an hour ahead, so its delivery is due
    // only for instances that far ahead: not for `app`, which owns the database and stays up.
    let a = app.spawn_peer().await;
    a.clock.advance(Duration::from_secs(3600));
    let rx = Receiver::start().await;
    // The first attempt never gets an answer: the instance is stopped while it waits.
    rx.script(&[Reply::Hang]);
    let admin = a.admin_token().await;
    let (_, secret) = endpoint(&a, &admin, &rx.url, &["api_key.revoked"]).await;
    let writer = a.token_with_scopes(&["keys:write"]).await;
    let key = new_key(&a, &writer, json!({})).await;
    revoke_key(&a, &writer, key["id"].as_str().unwrap()).await;
    let first = rx.wait_for("api_key.revoked", 1, Duration::from_secs(10)).await;

    let b = app.spawn_peer().await;
    b.clock.advance(Duration::from_secs(3600));
    a.stop().await;
    // The claim died with the stopped instance's transaction: b sends it, with the same webhook-id.
    let got = rx.wait_for("api_key.revoked", 2, Duration::from_secs(15)).await;
    assert_eq!(got[1].id, first[0].id);
    assert_eq!(got[1].body, first[0].body);
    assert!(signature_verifies(&secret, &got[1]));
    eventually(Duration::from_secs(10), "the delivery is marked delivered", || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM webhook_deliveries").fetch_one(&b.parts.db).await.unwrap();
        status == "delivered"
    })
    .await;
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM webhook_deliveries").fetch_one(&b.parts.db).await.unwrap();
    assert_eq!(attempts, 1, "the cut-off attempt was never recorded as made");
}

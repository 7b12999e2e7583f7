//! Redis past one server, with Debian's `redis-server`: `TESSERA_REDIS_URL=redis+sentinel://…` —
//! two instances find the master through a local Sentinel, share rate limits and publish
//! revocations through it, and follow a failover to the promoted replica; and
//! `redis+cluster://…` — the same two instances on a local three-node Redis Cluster.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

const ALL: [&str; 3] = ["keys:read", "keys:write", "keys:verify"];

/// A `redis-server` process of the test's own, killed when dropped.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn redis_server(args: &[&str]) -> Redis {
    let child = Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server) must be installed: scripts/test installs it");
    Redis(child)
}

async fn cmd(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let mut command = redis::cmd(args[0]);
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query_async(&mut c).await
}

async fn master_port(sentinel: u16) -> Option<u16> {
    let v = cmd(sentinel, &["SENTINEL", "get-master-addr-by-name", "tm"]).await.ok()?;
    let addr: Vec<String> = redis::from_redis_value(v).ok()?;
    addr.get(1)?.parse().ok()
}

async fn rate_limit_keys(port: u16, prefix: &str) -> usize {
    let v = cmd(port, &["KEYS", &format!("{prefix}:rl:*")]).await.unwrap();
    redis::from_redis_value::<Vec<String>>(v).unwrap().len()
}

/// Verifications admitted out of 3 on each instance for a fresh key limited to 3 per minute.
async fn admitted_of_six(apps: &[&TestApp], token: &str) -> usize {
    let body =
        json!({"name": "limited", "scopes": [], "environment": "live", "rate_limit": {"limit": 3, "window": 60}});
    let res = apps[0].post_json("/v1/keys", token, &body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let key = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let body = json!({"key": key});
    let body = &body;
    let calls = apps.iter().flat_map(|a| (0..3).map(move |_| a.post_json("/v1/keys/verify", token, body)));
    let answers = join_all(calls).await;
    let mut valid = 0;
    for r in answers {
        assert_eq!(r.status(), StatusCode::OK);
        if r.json::<Value>().await.unwrap()["valid"] == true {
            valid += 1;
        }
    }
    valid
}

async fn ready_shared(app: &TestApp) -> bool {
    let v: Value = app.http.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    v["redis"] == "up" && v["rate_limits"] == "shared"
}

#[tokio::test]
async fn instances_find_the_master_through_sentinel_and_follow_a_failover() {
    let (p1, p2, ps) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tessera-sentinel-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = ["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"];
    let _master = redis_server(&[&["--port", &p1.to_string()][..], &base].concat());
    let replica_of = format!("127.0.0.1 {p1}");
    let _replica = redis_server(&[&["--port", &p2.to_string(), "--replicaof", &replica_of][..], &base].concat());
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {ps}\nbind 127.0.0.1\nsentinel monitor tm 127.0.0.1 {p1} 1\nsentinel down-after-milliseconds tm 1000\n\
             sentinel failover-timeout tm 5000\n"
        ),
    )
    .unwrap();
    let _sentinel = redis_server(&[conf.to_str().unwrap(), "--sentinel"]);
    eventually(Duration::from_secs(20), "sentinel knows the master and its replica", || async {
        let replicas = cmd(ps, &["SENTINEL", "replicas", "tm"]).await.ok();
        let n = replicas.and_then(|v| redis::from_redis_value::<Vec<redis::Value>>(v).ok()).map_or(0, |r| r.len());
        master_port(ps).await == Some(p1) && n == 1
    })
    .await;

    let url = format!("redis+sentinel://127.0.0.1:{ps}/tm");
    let app = TestAppBuilder::new().set("TESSERA_REDIS_URL", &url).spawn().await;
    let peer = app.spawn_peer().await;
    let prefix = app.env["TESSERA_REDIS_PREFIX"].clone();
    for a in [&app, &peer] {
        eventually(Duration::from_secs(10), "rate limits shared through the master", || ready_shared(a)).await;
    }
    let token = app.token_with_scopes(&ALL).await;
    assert_eq!(admitted_of_six(&[&app, &peer], &token).await, 3, "one limit across both instances");
    assert!(rate_limit_keys(p1, &prefix).await >= 1, "counted on the master Sentinel named");

    // Failover: the replica becomes the master; both instances move to it within seconds.
    cmd(ps, &["SENTINEL", "FAILOVER", "tm"]).await.unwrap();
    eventually(Duration::from_secs(30), "sentinel promotes the replica", || async {
        master_port(ps).await == Some(p2)
    })
    .await;
    // Until the old master is told to follow the new one it still takes writes (Redis replication
    // is asynchronous: what it counted meanwhile is lost with it, as with any Redis failover).
    eventually(Duration::from_secs(30), "the old master follows the new one", || async {
        let role = cmd(p1, &["ROLE"]).await.ok().and_then(|v| redis::from_redis_value::<Vec<redis::Value>>(v).ok());
        role.and_then(|r| r.first().cloned()).and_then(|v| redis::from_redis_value::<String>(v).ok()).as_deref()
            == Some("slave")
    })
    .await;
    let before = rate_limit_keys(p2, &prefix).await;
    eventually(Duration::from_secs(15), "shared limits on the new master", || async {
        ready_shared(&app).await && ready_shared(&peer).await && admitted_of_six(&[&app, &peer], &token).await == 3
    })
    .await;
    assert!(rate_limit_keys(p2, &prefix).await > before, "counted on the promoted master");
    peer.stop().await;
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free port whose cluster-bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

#[tokio::test]
async fn instances_share_limits_and_revocations_through_a_redis_cluster() {
    let ports = [free_cluster_port(), free_cluster_port(), free_cluster_port()];
    let dir = std::env::temp_dir().join(format!("tessera-cluster-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let _nodes: Vec<Redis> = ports
        .iter()
        .map(|p| {
            let conf = dir.join(format!("nodes-{p}.conf"));
            redis_server(&[
                "--port",
                &p.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                conf.to_str().unwrap(),
            ])
        })
        .collect();
    for p in ports {
        eventually(Duration::from_secs(10), "node answers", || async move { cmd(p, &["PING"]).await.is_ok() }).await;
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli (Debian package redis-tools) must be installed");
    assert!(created.success(), "redis-cli --cluster create");
    for p in ports {
        eventually(Duration::from_secs(20), "the cluster is ok on every node", || async move {
            let info = cmd(p, &["CLUSTER", "INFO"]).await.ok();
            info.and_then(|v| redis::from_redis_value::<String>(v).ok()).is_some_and(|i| i.contains("cluster_state:ok"))
        })
        .await;
    }

    let url = format!("redis+cluster://{}", addrs.join(","));
    let app = TestAppBuilder::new().set("TESSERA_REDIS_URL", &url).spawn().await;
    let peer = app.spawn_peer().await;
    let prefix = app.env["TESSERA_REDIS_PREFIX"].clone();
    for a in [&app, &peer] {
        eventually(Duration::from_secs(15), "limits and fan-out through the cluster", || ready_shared(a)).await;
    }
    let token = app.token_with_scopes(&ALL).await;
    assert_eq!(admitted_of_six(&[&app, &peer], &token).await, 3, "one limit across both instances");

    // A revocation is appended to the stream, wherever the cluster keeps that key.
    let res = app.post_json("/v1/keys", &token, &json!({"name": "k", "scopes": [], "environment": "live"})).await;
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app.post_json(&format!("/v1/keys/{id}/revoke"), &token, &json!({})).await;
    assert!(res.status().is_success());
    let stream = format!("{prefix}:revocations:stream");
    let client = redis::cluster::ClusterClient::new(addrs.iter().map(|a| format!("redis://{a}"))).unwrap();
    let conn = client.get_async_connection().await.unwrap();
    eventually(Duration::from_secs(10), "the revocation is on the cluster's stream", || {
        let (mut conn, stream) = (conn.clone(), stream.clone());
        async move { redis::cmd("XLEN").arg(&stream).query_async::<i64>(&mut conn).await.is_ok_and(|n| n >= 1) }
    })
    .await;
    peer.stop().await;
    app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

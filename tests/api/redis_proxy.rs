//! A TCP proxy in front of the shared test Redis, so a test can make Redis go away and come back
//! for the instances pointed at it (the shared Redis itself must not be restarted).

use crate::{helpers::redis_url, tcp_proxy::Proxy};

pub struct RedisProxy(Proxy);

impl RedisProxy {
    /// A running proxy on a free port.
    pub async fn start() -> Self {
        let url = redis_url();
        let upstream = url.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
        let mut proxy = Proxy::bind().await;
        proxy.start(&upstream);
        Self(proxy)
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        self.0.url("redis")
    }

    /// Redis goes away: open connections are cut and new ones refused.
    pub async fn stop(&mut self) {
        self.0.cut().await;
    }

    /// Redis comes back on the same address.
    pub async fn resume(&mut self) {
        self.0.restore().await;
    }
}

/// Deletes every Redis key under `prefix` (what a restarted Redis would have lost), straight on
/// the shared Redis.
pub async fn forget_keys(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    }
    keys.len()
}

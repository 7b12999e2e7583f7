//! A TCP proxy in front of the shared test Redis, so a test can make Redis go away and come back
//! for the instances pointed at it (the shared Redis itself must not be restarted): `stop` closes
//! every proxied connection and stops listening, `start` listens again on the same port.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::redis_url;

pub struct RedisProxy {
    port: u16,
    upstream: String,
    running: Option<CancellationToken>,
}

impl RedisProxy {
    /// A running proxy on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = redis_url();
        let upstream = url.trim_start_matches("redis://").split('/').next().unwrap().to_owned();
        let mut proxy = Self { port, upstream, running: None };
        proxy.serve(listener);
        proxy
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let stop = CancellationToken::new();
        self.running = Some(stop.clone());
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((mut client, _)) = accepted else { continue };
                let (stop, upstream) = (stop.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
    }

    /// Redis goes away: open connections are cut and new ones refused.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
        // Let the tasks drop their sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Redis comes back on the same address.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
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

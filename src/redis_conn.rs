//! One lazily made, self-reconnecting Redis connection (a multiplexed `ConnectionManager`), for the
//! parts that talk to Redis on request paths: the revocation bus, the per-source limiter and the
//! API-key rate limiter. Each keeps its own, with its own timeout, so a slow publish never delays a
//! sign-in or a verification.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// A connection made on first use and kept; until Redis first answers, each use tries again.
pub struct LazyConnection {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl LazyConnection {
    /// For `client`; `timeout` bounds connecting and each response.
    pub fn new(client: redis::Client, timeout: Duration) -> Self {
        Self { client, conn: OnceCell::new(), timeout }
    }

    /// The client, for what needs a connection of its own (a pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection, or `None` when Redis does not answer within `wait` (first use only: the
    /// manager reconnects by itself afterwards).
    pub async fn get(&self, wait: Duration) -> Option<ConnectionManager> {
        if let Some(c) = self.conn.get() {
            return Some(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let init = self.conn.get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config));
        match tokio::time::timeout(wait, init).await {
            Ok(Ok(c)) => Some(c.clone()),
            _ => None,
        }
    }
}

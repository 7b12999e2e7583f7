//! One lazily made, self-reconnecting Redis connection (a multiplexed `ConnectionManager`), for the
//! parts that talk to Redis on request paths: the revocation bus, the per-source limiter and the
//! API-key rate limiter. Each keeps its own, with its own timeout, so a slow publish never delays a
//! sign-in or a verification.
//!
//! `TESSERA_REDIS_URL` is either a plain `redis://` / `rediss://` URL or a Redis Sentinel URL,
//! `redis+sentinel://[user[:password]@]host:port[,host:port…]/<master name>[/<db>]`: the master
//! is found through the redis crate's own Sentinel support (which checks with `ROLE` that the
//! node is a master), and re-asked every [`SENTINEL_CHECK`]; after a failover the connection moves
//! to the new master. Credentials and db apply to the master; the sentinels are asked without.
//! Or a Redis Cluster, `redis+cluster://[user[:password]@]host:port[,host:port…]`: commands go
//! through the redis crate's cluster client (each routed by its key's slot: every key Tessera uses
//! is one key per command or script), and pub/sub subscriptions through one node at a time, a
//! different seed node after each reconnection (a cluster delivers `PUBLISH` to every node).

use std::{
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    Cmd, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult, Value,
};

/// How often a Sentinel-backed connection asks which node is the master.
pub const SENTINEL_CHECK: Duration = Duration::from_secs(1);

enum Target {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster { client: ClusterClient, seeds: Vec<String>, next_seed: std::sync::atomic::AtomicUsize },
}

/// A multiplexed connection to one Redis (plain or Sentinel's master) or to a Redis Cluster;
/// cheap to clone, and used like any redis connection (`query_async`, scripts, pipelines).
#[derive(Clone)]
pub enum RedisConn {
    /// One server, reconnecting by itself.
    Single(ConnectionManager),
    /// A cluster, routing each command by its key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConn {
    /// Sends `pipe` and ignores its replies: as one pipeline on a single server; command by
    /// command on a cluster, where a pipeline is routed as a whole and its commands may belong to
    /// different nodes (a stream key and a channel, which is not a key).
    pub async fn send(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        match self {
            Self::Single(c) => pipe.query_async::<()>(c).await,
            Self::Cluster(c) => {
                for cmd in pipe.cmd_iter() {
                    cmd.query_async::<()>(c).await?;
                }
                Ok(())
            }
        }
    }
}

struct Current {
    addr: String,
    manager: RedisConn,
}

struct Shared {
    target: Target,
    timeout: Duration,
    current: RwLock<Option<Current>>,
    connecting: tokio::sync::Mutex<()>,
}

/// A connection made on first use and kept; until Redis first answers, each use tries again.
pub struct LazyConnection {
    shared: Arc<Shared>,
}

/// Parses a `redis+sentinel://` URL into (sentinel URLs, master name, master's settings).
fn parse_sentinel(url: &str) -> RedisResult<(Vec<String>, String, RedisConnectionInfo)> {
    let bad =
        |why: &str| RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad Redis Sentinel URL", why.to_owned()));
    let (tls, rest) = if let Some(r) = url.strip_prefix("redis+sentinel://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("rediss+sentinel://") {
        (true, r)
    } else {
        return Err(bad("expected redis+sentinel://"));
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no master name: …/<master name>"))?;
    let mut path = path.split('/');
    let service = path.next().filter(|s| !s.is_empty()).ok_or_else(|| bad("no master name"))?;
    let db = match path.next() {
        Some(d) if !d.is_empty() => d.parse::<i64>().map_err(|_| bad("the db must be a number"))?,
        _ => 0,
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let sentinels: Vec<String> =
        hosts.split(',').filter(|h| !h.is_empty()).map(|h| format!("{scheme}://{h}")).collect();
    if sentinels.is_empty() {
        return Err(bad("no sentinel address"));
    }
    let mut info = RedisConnectionInfo::default().set_db(db);
    if let Some(auth) = auth {
        let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
        if !user.is_empty() {
            info = info.set_username(percent_decode(user));
        }
        if !pass.is_empty() {
            info = info.set_password(percent_decode(pass));
        }
    }
    Ok((sentinels, service.to_owned(), info))
}

/// Parses a `redis+cluster://` URL into seed node URLs (credentials kept on each).
fn parse_cluster(url: &str) -> RedisResult<Vec<String>> {
    let bad =
        |why: &str| RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad Redis Cluster URL", why.to_owned()));
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis+cluster://") {
        ("redis", r)
    } else if let Some(r) = url.strip_prefix("rediss+cluster://") {
        ("rediss", r)
    } else {
        return Err(bad("expected redis+cluster://"));
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let hosts = rest.split(['/', '?']).next().unwrap_or("");
    let seeds: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| match auth {
            Some(a) => format!("{scheme}://{a}@{h}"),
            None => format!("{scheme}://{h}"),
        })
        .collect();
    if seeds.is_empty() {
        return Err(bad("no node address"));
    }
    Ok(seeds)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `url` is a URL this module can use (see the module), checked once at configuration;
/// the reason when not.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://") {
        return parse_sentinel(url).map(|_| ()).map_err(|e| e.to_string());
    }
    if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") {
        return parse_cluster(url).and_then(ClusterClient::new).map(|_| ()).map_err(|e| e.to_string());
    }
    if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("unix://")) {
        return Err("must be a redis://, rediss://, unix://, redis+sentinel:// or redis+cluster:// URL".into());
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| e.to_string())
}

impl Shared {
    /// A client for the node to talk to now: the URL's, or the master Sentinel names.
    async fn resolve(&self) -> RedisResult<redis::Client> {
        match &self.target {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.lock().await.async_get_client().await,
            Target::Cluster { seeds, next_seed, .. } => {
                let i = next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                redis::Client::open(seeds[i % seeds.len()].as_str())
            }
        }
    }

    fn manager(&self) -> Option<RedisConn> {
        self.current.read().ok()?.as_ref().map(|c| c.manager.clone())
    }

    async fn connect(&self, client: redis::Client) -> RedisResult<Current> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let addr = client.get_connection_info().addr().to_string();
        let manager = RedisConn::Single(ConnectionManager::new_with_config(client, config).await?);
        Ok(Current { addr, manager })
    }

    fn current_addr(&self) -> Option<String> {
        self.current.read().ok()?.as_ref().map(|c| c.addr.clone())
    }

    fn set(&self, c: Current) {
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(c);
        }
    }
}

/// Follows the master Sentinel names: when it changes, the next uses go to the new one.
async fn follow_master(shared: Weak<Shared>) {
    loop {
        tokio::time::sleep(SENTINEL_CHECK).await;
        let Some(s) = shared.upgrade() else { return };
        let Ok(Ok(client)) = tokio::time::timeout(s.timeout * 4, s.resolve()).await else {
            continue;
        };
        let addr = client.get_connection_info().addr().to_string();
        if s.current_addr().as_deref() == Some(addr.as_str()) {
            continue;
        }
        if let Ok(Ok(c)) = tokio::time::timeout(s.timeout * 4, s.connect(client)).await {
            tracing::warn!(master = %addr, "Redis Sentinel names a new master: moving to it");
            s.set(c);
        }
    }
}

impl LazyConnection {
    /// For `url` (plain or Sentinel, see the module); `timeout` bounds connecting and each
    /// response. Errors: an unreadable URL. Nothing is contacted yet.
    pub fn open(url: &str, timeout: Duration) -> RedisResult<Self> {
        let target = if url.contains("+sentinel://") {
            let (sentinels, service, info) = parse_sentinel(url)?;
            let node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
            Target::Sentinel(tokio::sync::Mutex::new(SentinelClient::build(
                sentinels,
                service,
                Some(node),
                SentinelServerType::Master,
            )?))
        } else if url.contains("+cluster://") {
            let seeds = parse_cluster(url)?;
            let client = ClusterClient::builder(seeds.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(1)
                .build()?;
            Target::Cluster { client, seeds, next_seed: std::sync::atomic::AtomicUsize::new(0) }
        } else {
            Target::Direct(redis::Client::open(url)?)
        };
        let sentinel = matches!(target, Target::Sentinel(_));
        let shared =
            Arc::new(Shared { target, timeout, current: RwLock::new(None), connecting: tokio::sync::Mutex::new(()) });
        if sentinel {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(follow_master(Arc::downgrade(&shared)));
            }
        }
        Ok(Self { shared })
    }

    /// A client for the current master (a cluster: the next seed node), for what needs a
    /// connection of its own (a pub/sub subscription). Errors: Sentinel could not name a master.
    pub async fn client(&self) -> RedisResult<redis::Client> {
        self.shared.resolve().await
    }

    /// The connection, or `None` when Redis does not answer within `wait` (first use only: the
    /// manager reconnects by itself afterwards, and a Sentinel-backed one follows failovers).
    pub async fn get(&self, wait: Duration) -> Option<RedisConn> {
        if let Some(m) = self.shared.manager() {
            return Some(m);
        }
        let init = async {
            let _one = self.shared.connecting.lock().await;
            if let Some(m) = self.shared.manager() {
                return Ok(m);
            }
            let c = match &self.shared.target {
                Target::Cluster { client, .. } => Current {
                    addr: "cluster".into(),
                    manager: RedisConn::Cluster(client.get_async_connection().await?),
                },
                _ => {
                    let client = self.shared.resolve().await?;
                    self.shared.connect(client).await?
                }
            };
            let m = c.manager.clone();
            self.shared.set(c);
            Ok::<_, RedisError>(m)
        };
        match tokio::time::timeout(wait, init).await {
            Ok(Ok(m)) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_its_settings() {
        let (s, name, info) = parse_sentinel("redis+sentinel://u:p%40ss@h1:26379,h2:26380/mymaster/2").unwrap();
        assert_eq!(s, vec!["redis://h1:26379", "redis://h2:26380"]);
        assert_eq!(name, "mymaster");
        assert_eq!((info.username(), info.password(), info.db()), (Some("u"), Some("p@ss"), 2));
        let (s, _, info) = parse_sentinel("rediss+sentinel://:secret@h:1/m").unwrap();
        assert_eq!(s, vec!["rediss://h:1"]);
        assert_eq!((info.username(), info.password()), (None, Some("secret")));
        for bad in ["redis+sentinel://h:1", "redis+sentinel://h:1/", "redis+sentinel:///m", "redis+sentinel://h:1/m/x"]
        {
            assert!(parse_sentinel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cluster_urls_name_the_seed_nodes_with_their_credentials() {
        assert_eq!(
            parse_cluster("redis+cluster://:pw@h1:7000,h2:7001").unwrap(),
            vec!["redis://:pw@h1:7000", "redis://:pw@h2:7001"]
        );
        assert_eq!(parse_cluster("rediss+cluster://h:1/").unwrap(), vec!["rediss://h:1"]);
        assert!(parse_cluster("redis+cluster://").is_err());
        assert!(check_url("redis+cluster://h1:7000,h2:7001").is_ok());
        assert!(check_url("http://h:1").is_err());
    }
}

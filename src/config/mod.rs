//! Configuration: read once at start from `TESSERA_*` variables, validated into typed values.
//!
//! Every error names the variable it came from, so a bad deployment fails with one clear line.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::secrets::{HmacSecret, MasterKey, PreviousHmac, RedactedUrl, Secret};

mod secrets;
mod vars;
mod webhooks;
pub use webhooks::{LeakPolicy, WebhookConfig};

/// Longest access-token lifetime a client may be configured with (seconds, one day).
pub const MAX_CLIENT_ACCESS_TTL: u64 = 86_400;

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self { var, reason: reason.into() }
    }
}

/// Signing algorithm for newly generated signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlg {
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    Rs256,
}

impl SigningAlg {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a JOSE `alg` name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the master key comes from.
#[derive(Debug, Clone)]
pub enum MasterKeySource {
    /// Given in `TESSERA_MASTER_KEY`.
    Env(MasterKey),
    /// Development only: generated into (and read back from) a local file.
    DevFile(PathBuf),
}

/// The whole, validated configuration of one Tessera process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Postgres URL of Tessera's own database.
    pub database_url: RedactedUrl,
    /// `TESSERA_DATABASE_REPLICA_URL`: a read replica for reports (usage, anomalies, audit log);
    /// `None` = they read the primary.
    pub database_replica_url: Option<RedactedUrl>,
    /// Upper bound of the connection pool.
    pub db_max_connections: u32,
    /// Server-side statement timeout applied to every pooled connection.
    pub db_statement_timeout: Duration,
    /// Redis URL for revocation fan-out; `None` = single-instance mode.
    pub redis_url: Option<RedactedUrl>,
    /// Prefix of every Redis key and channel (`tessera` gives `tessera:revocations`).
    pub redis_prefix: String,
    /// Listen address.
    pub bind: SocketAddr,
    /// `iss` of every token, without a trailing slash.
    pub issuer: String,
    /// Master key origin.
    pub master_key: MasterKeySource,
    /// `TESSERA_MASTER_KEY_PREVIOUS`: an earlier master key, to open what it sealed (and, while no
    /// HMAC secret is set, to verify the hashes made under it) until everything is re-sealed.
    pub master_key_previous: Option<MasterKey>,
    /// `TESSERA_HMAC_SECRET`: the root of the keyed hashes; `None` = derived from the master key.
    pub hmac_secret: Option<HmacSecret>,
    /// `TESSERA_HMAC_SECRET_PREVIOUS`: the earlier root, still accepted.
    pub hmac_secret_previous: Option<PreviousHmac>,
    /// Secret of the bootstrap `admin` client, when one should exist.
    pub bootstrap_admin_secret: Option<Secret>,
    /// Default access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime since the last rotation.
    pub refresh_token_idle_ttl: Duration,
    /// Refresh-token lifetime since login.
    pub refresh_token_absolute_ttl: Duration,
    /// How long after a refresh token was spent a lost answer may be retried and get the same
    /// successor (0 = strict: every second presentation is reuse). 0 to 60 s.
    pub refresh_retry_grace: Duration,
    /// Algorithm of newly generated signing keys.
    pub signing_alg: SigningAlg,
    /// How long a signing key stays active before scheduled rotation.
    pub signing_key_rotation: Duration,
    /// `max-age` of the JWKS response; also how long a next key is published before it may sign.
    pub jwks_max_age: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Longest silence on `GET /v1/revocations/stream` before a comment line is sent (1 to 15 s;
    /// the contract promises one at least every 15 s, tests shorten it).
    pub revocation_stream_heartbeat: Duration,
    /// Failed password attempts within `login_failure_window` that lock an account.
    pub login_max_failures: u32,
    /// Window over which failed logins are counted.
    pub login_failure_window: Duration,
    /// How long a locked account stays locked.
    pub login_lockout: Duration,
    /// A browser sign-in session ends after this long without use (`TESSERA_SESSION_IDLE_TTL`).
    pub session_idle_ttl: Duration,
    /// A browser sign-in session ends this long after the password was checked, however busy
    /// (`TESSERA_SESSION_ABSOLUTE_TTL`).
    pub session_absolute_ttl: Duration,
    /// The name the sign-in page shows (`TESSERA_SERVICE_NAME`).
    pub service_name: String,
    /// Most API keys one owner may hold (not counting revoked ones).
    pub max_keys_per_owner: u32,
    /// Log format.
    pub log_format: LogFormat,
    /// `TESSERA_OTLP_ENDPOINT`: an OpenTelemetry collector's OTLP/HTTP URL request spans are
    /// exported to; `None` = no export.
    pub otlp_endpoint: Option<String>,
    /// Anomaly thresholds.
    pub anomalies: AnomalyThresholds,
    /// How long per-minute usage is kept before it is rolled up into hours.
    pub usage_minute_retention: Duration,
    /// How long per-hour usage is kept.
    pub usage_hour_retention: Duration,
    /// Whether API-key verifications are counted (usage statistics and the anomalies built on them).
    /// On by default; off only to measure its cost or to shed load in an emergency.
    pub usage_counting: bool,
    /// Whether a presented key that is not in Tessera's `tsk_` format but is 16 to 256 visible ASCII
    /// characters is looked up as an imported key (by its SHA-256) instead of refused as MALFORMED
    /// (`TESSERA_API_KEY_FOREIGN_FORMATS`, default false).
    pub api_key_foreign_formats: bool,
    /// Memory budget of the API-key record cache, in bytes.
    pub api_key_cache_bytes: u64,
    /// How long a cached API-key record is trusted without a change notification.
    pub api_key_cache_ttl: Duration,
    /// Proxies whose `X-Forwarded-For` is believed for the source address (`TESSERA_TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<IpNet>,
    /// Argon2 runs at once (`TESSERA_ARGON2_WORKERS`, default: the number of cores).
    pub argon2_workers: u32,
    /// Failed or in-flight password/secret checks one source address may have per 60 s.
    pub source_max_failures: u32,
    /// Connection limits (slow or idle clients, open connections).
    pub connections: ConnectionLimits,
    /// What a reported leak of a real key does.
    pub leak_policy: LeakPolicy,
    /// Webhook delivery settings.
    pub webhooks: WebhookConfig,
}

/// What one client connection may hold: time to send headers and a body, time left idle, and how
/// many connections may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `TESSERA_HEADER_TIMEOUT`: a request's headers must arrive within this (counted from the
    /// connection's start, or from the first byte of a later request on it).
    pub header_timeout: Duration,
    /// `TESSERA_BODY_TIMEOUT`: a request's body must arrive within this after its headers.
    pub body_timeout: Duration,
    /// `TESSERA_IDLE_TIMEOUT`: a keep-alive connection with nothing in flight closes after this.
    pub idle_timeout: Duration,
    /// `TESSERA_MAX_CONNECTIONS`: open connections at most (lowered further to fit the process's
    /// file-descriptor limit at start).
    pub max_connections: u32,
}

/// When the anomaly detector raises a record.
#[derive(Debug, Clone)]
pub struct AnomalyThresholds {
    /// RATE_SPIKE: last minute at least this many times the key's own per-minute baseline...
    pub spike_factor: u32,
    /// ...and at least this many verifications in that minute, so quiet keys do not flap.
    pub spike_floor: u32,
    /// IP_NOT_ALLOWED_BURST: this many IP_NOT_ALLOWED refusals of one key within 5 minutes.
    pub ip_denied_burst: u32,
    /// NEW_IP_BURST: this many never-seen source addresses for one key within 10 minutes.
    pub new_ip_burst: u32,
    /// BRUTE_FORCE: this many NOT_FOUND/MALFORMED refusals from one source within 5 minutes.
    pub brute_force: u32,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from a map (tests, config files).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads the configuration through `get`, which returns a variable's value if it is set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = vars::Vars::new(get);
        let var = |name: &str| vars.get(name);

        // Named in errors as the variable it came from.
        let (database_url_var, database_url) = match (var("TESSERA_DATABASE_URL"), var("DATABASE_URL")) {
            (Some(v), _) => ("TESSERA_DATABASE_URL", v),
            (None, Some(v)) => ("DATABASE_URL", v),
            (None, None) => ("TESSERA_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tessera".to_owned()),
        };
        vars::postgres_url(database_url_var, &database_url)?;

        let database_replica_url = var("TESSERA_DATABASE_REPLICA_URL");
        if let Some(url) = &database_replica_url {
            vars::postgres_url("TESSERA_DATABASE_REPLICA_URL", url)?;
        }
        let otlp_endpoint = var("TESSERA_OTLP_ENDPOINT").filter(|v| !v.is_empty());
        if let Some(url) = &otlp_endpoint {
            if url::Url::parse(url).map(|u| !matches!(u.scheme(), "http" | "https")).unwrap_or(true) {
                return Err(ConfigError::new(
                    "TESSERA_OTLP_ENDPOINT",
                    "must be an http(s) URL, e.g. http://collector:4318",
                ));
            }
        }
        let redis_url = var("TESSERA_REDIS_URL");
        if let Some(url) = &redis_url {
            crate::redis_conn::check_url(url).map_err(|why| ConfigError::new("TESSERA_REDIS_URL", why))?;
        }
        let redis_prefix = var("TESSERA_REDIS_PREFIX").unwrap_or_else(|| "tessera".to_owned());

        let bind_raw = var("TESSERA_BIND").unwrap_or_else(|| "127.0.0.1:8080".to_owned());
        let bind: SocketAddr = bind_raw.trim().parse().map_err(|_| {
            ConfigError::new("TESSERA_BIND", format!("expected an address like 127.0.0.1:8080, got {bind_raw:?}"))
        })?;

        let issuer = vars::issuer(var("TESSERA_ISSUER"))?;

        let secrets::Sources { master_key, master_key_previous, hmac_secret, hmac_secret_previous } =
            secrets::sources(&var)?;

        let bootstrap_admin_secret = match var("TESSERA_BOOTSTRAP_ADMIN_SECRET") {
            Some(s) if s.len() < 16 => {
                return Err(ConfigError::new("TESSERA_BOOTSTRAP_ADMIN_SECRET", "must be at least 16 characters"))
            }
            Some(s) => Some(Secret::new(s)),
            None => None,
        };

        let access_token_ttl = vars.secs("TESSERA_ACCESS_TOKEN_TTL", 600, 1, 86_400)?;
        let refresh_token_idle_ttl = vars.secs("TESSERA_REFRESH_TOKEN_IDLE_TTL", 1_209_600, 1, 31_536_000)?;
        let refresh_token_absolute_ttl = vars.secs("TESSERA_REFRESH_TOKEN_ABSOLUTE_TTL", 2_592_000, 1, 31_536_000)?;
        if refresh_token_absolute_ttl < refresh_token_idle_ttl {
            return Err(ConfigError::new(
                "TESSERA_REFRESH_TOKEN_ABSOLUTE_TTL",
                "must not be shorter than TESSERA_REFRESH_TOKEN_IDLE_TTL",
            ));
        }

        let refresh_retry_grace = vars.secs("TESSERA_REFRESH_RETRY_GRACE", 10, 0, 60)?;

        let signing_alg = match var("TESSERA_SIGNING_ALG") {
            None => SigningAlg::Es256,
            Some(v) => SigningAlg::parse(v.trim()).ok_or_else(|| {
                ConfigError::new("TESSERA_SIGNING_ALG", format!("expected ES256, EdDSA or RS256, got {v:?}"))
            })?,
        };

        let log_format = match var("TESSERA_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new("TESSERA_LOG_FORMAT", format!("expected text or json, got {other:?}")))
            }
        };

        let trusted_proxies = match var("TESSERA_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(v) => vars::cidrs(&v).map_err(|reason| ConfigError::new("TESSERA_TRUSTED_PROXIES", reason))?,
        };
        let session_idle_ttl = vars.secs("TESSERA_SESSION_IDLE_TTL", 3_600, 60, 2_592_000)?;
        let session_absolute_ttl = vars.secs("TESSERA_SESSION_ABSOLUTE_TTL", 43_200, 60, 31_536_000)?;
        if session_absolute_ttl < session_idle_ttl {
            return Err(ConfigError::new(
                "TESSERA_SESSION_ABSOLUTE_TTL",
                "must not be shorter than TESSERA_SESSION_IDLE_TTL",
            ));
        }
        let service_name = var("TESSERA_SERVICE_NAME").map_or_else(|| "Tessera".to_owned(), |v| v.trim().to_owned());
        if service_name.chars().count() > 80 || service_name.chars().any(char::is_control) {
            return Err(ConfigError::new(
                "TESSERA_SERVICE_NAME",
                "must be at most 80 characters, without control characters",
            ));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| u32::try_from(n.get()).unwrap_or(2));

        Ok(Self {
            leak_policy: webhooks::leak_policy(var("TESSERA_LEAK_POLICY"))?,
            webhooks: WebhookConfig { allow_private: vars.flag("TESSERA_WEBHOOK_ALLOW_PRIVATE", false)? },
            trusted_proxies,
            argon2_workers: vars.num("TESSERA_ARGON2_WORKERS", cores, 1, 1024)?,
            source_max_failures: vars.num("TESSERA_SOURCE_MAX_FAILURES", 30, 1, 1_000_000)?,
            database_url: RedactedUrl::new(database_url),
            database_replica_url: database_replica_url.map(RedactedUrl::new),
            db_max_connections: vars.num("TESSERA_DB_MAX_CONNECTIONS", 20, 1, 1000)?,
            db_statement_timeout: Duration::from_millis(u64::from(vars.num(
                "TESSERA_DB_STATEMENT_TIMEOUT_MS",
                5_000,
                100,
                600_000,
            )?)),
            redis_url: redis_url.map(RedactedUrl::new),
            redis_prefix,
            bind,
            issuer,
            master_key,
            master_key_previous,
            hmac_secret,
            hmac_secret_previous,
            bootstrap_admin_secret,
            access_token_ttl,
            refresh_token_idle_ttl,
            refresh_retry_grace,
            refresh_token_absolute_ttl,
            signing_alg,
            signing_key_rotation: vars.secs("TESSERA_SIGNING_KEY_ROTATION", 2_592_000, 60, 31_536_000)?,
            jwks_max_age: vars.secs("TESSERA_JWKS_MAX_AGE", 300, 0, 86_400)?,
            request_timeout: vars.secs("TESSERA_REQUEST_TIMEOUT", 30, 1, 600)?,
            revocation_stream_heartbeat: vars.secs("TESSERA_REVOCATION_STREAM_HEARTBEAT", 15, 1, 15)?,
            login_max_failures: vars.num("TESSERA_LOGIN_MAX_FAILURES", 5, 1, 1000)?,
            login_failure_window: vars.secs("TESSERA_LOGIN_FAILURE_WINDOW", 900, 1, 86_400)?,
            login_lockout: vars.secs("TESSERA_LOGIN_LOCKOUT", 900, 1, 86_400)?,
            session_idle_ttl,
            session_absolute_ttl,
            service_name,
            max_keys_per_owner: vars.num("TESSERA_MAX_KEYS_PER_OWNER", 1000, 1, 1_000_000)?,
            log_format,
            otlp_endpoint,
            anomalies: AnomalyThresholds {
                spike_factor: vars.num("TESSERA_ANOMALY_SPIKE_FACTOR", 10, 2, 1_000_000)?,
                spike_floor: vars.num("TESSERA_ANOMALY_SPIKE_FLOOR", 120, 1, 100_000_000)?,
                ip_denied_burst: vars.num("TESSERA_ANOMALY_IP_DENIED_BURST", 20, 1, 100_000_000)?,
                new_ip_burst: vars.num("TESSERA_ANOMALY_NEW_IP_BURST", 20, 2, 100_000_000)?,
                brute_force: vars.num("TESSERA_ANOMALY_BRUTE_FORCE", 50, 1, 100_000_000)?,
            },
            usage_counting: vars.flag("TESSERA_USAGE_COUNTING", true)?,
            api_key_foreign_formats: vars.flag("TESSERA_API_KEY_FOREIGN_FORMATS", false)?,
            api_key_cache_bytes: u64::from(vars.num("TESSERA_API_KEY_CACHE_MB", 128, 1, 65_536)?) * 1024 * 1024,
            api_key_cache_ttl: vars.secs("TESSERA_API_KEY_CACHE_TTL", 600, 1, 86_400)?,
            usage_minute_retention: vars.secs("TESSERA_USAGE_MINUTE_RETENTION", 172_800, 3_600, 31_536_000)?,
            usage_hour_retention: vars.secs("TESSERA_USAGE_HOUR_RETENTION", 7_776_000, 86_400, 315_360_000)?,
            connections: ConnectionLimits {
                header_timeout: vars.secs("TESSERA_HEADER_TIMEOUT", 10, 1, 3_600)?,
                body_timeout: vars.secs("TESSERA_BODY_TIMEOUT", 30, 1, 3_600)?,
                idle_timeout: vars.secs("TESSERA_IDLE_TIMEOUT", 60, 1, 86_400)?,
                max_connections: vars.num("TESSERA_MAX_CONNECTIONS", 10_000, 1, 1_000_000)?,
            },
        })
    }

    /// Longest lifetime an access token of this service can have (global default or a per-client one).
    pub fn max_access_token_ttl(&self) -> Duration {
        self.access_token_ttl.max(Duration::from_secs(MAX_CLIENT_ACCESS_TTL))
    }
}

#[cfg(test)]
mod tests;

//! Configuration parsing: defaults, bad values naming their variable, redaction, the reference.

use super::*;

fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_map(&map)
}

#[test]
fn defaults_follow_the_contract() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.database_url.expose(), "postgres://postgres@127.0.0.1:5432/tessera");
    assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(c.issuer, "http://127.0.0.1:8080");
    assert_eq!(c.access_token_ttl, Duration::from_secs(600));
    assert_eq!(c.refresh_token_idle_ttl, Duration::from_secs(1_209_600));
    assert_eq!(c.refresh_token_absolute_ttl, Duration::from_secs(2_592_000));
    assert_eq!(c.signing_alg, SigningAlg::Es256);
    assert!(c.redis_url.is_none());
    // Channel tessera:revocations and stream tessera:revocations:stream, as the contract names them.
    assert_eq!(c.redis_prefix, "tessera");
    assert!(c.usage_counting);
    assert!(!c.api_key_foreign_formats);
    assert!(matches!(c.master_key, MasterKeySource::DevFile(_)));
    assert_eq!(
        c.connections,
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    );
}

#[test]
fn connection_limits_are_read_and_bad_ones_name_their_variable() {
    let c = cfg(&[
        ("TESSERA_HEADER_TIMEOUT", "1"),
        ("TESSERA_BODY_TIMEOUT", "2"),
        ("TESSERA_IDLE_TIMEOUT", "3"),
        ("TESSERA_MAX_CONNECTIONS", "2"),
    ])
    .unwrap();
    assert_eq!(c.connections.header_timeout, Duration::from_secs(1));
    assert_eq!(c.connections.body_timeout, Duration::from_secs(2));
    assert_eq!(c.connections.idle_timeout, Duration::from_secs(3));
    assert_eq!(c.connections.max_connections, 2);
    for (var, value) in [
        ("TESSERA_HEADER_TIMEOUT", "0"),
        ("TESSERA_BODY_TIMEOUT", "soon"),
        ("TESSERA_IDLE_TIMEOUT", "-1"),
        ("TESSERA_MAX_CONNECTIONS", "0"),
        ("TESSERA_MAX_CONNECTIONS", "many"),
    ] {
        let err = cfg(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
    }
}

#[test]
fn each_bad_value_names_its_variable() {
    for (var, value) in [
        ("TESSERA_ACCESS_TOKEN_TTL", "ten"),
        ("TESSERA_ACCESS_TOKEN_TTL", "0"),
        ("TESSERA_BIND", "localhost"),
        ("TESSERA_SIGNING_ALG", "HS256"),
        ("TESSERA_MASTER_KEY", "c2hvcnQ="),
        ("TESSERA_REDIS_URL", "http://x"),
        ("TESSERA_ISSUER", "ftp://x"),
        ("TESSERA_ISSUER", "https://id.example.com/a//b"),
        ("TESSERA_ISSUER", "https://id.example.com/{tenant}"),
        ("TESSERA_LOG_FORMAT", "xml"),
        ("TESSERA_DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "mysql://x"),
        ("TESSERA_USAGE_COUNTING", "maybe"),
        ("TESSERA_API_KEY_CACHE_MB", "0"),
        ("TESSERA_API_KEY_CACHE_MB", "lots"),
        ("TESSERA_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TESSERA_TRUSTED_PROXIES", "10.0.0.1/8"),
        ("TESSERA_TRUSTED_PROXIES", "proxy.internal"),
        ("TESSERA_ARGON2_WORKERS", "0"),
        ("TESSERA_ARGON2_WORKERS", "many"),
        ("TESSERA_SOURCE_MAX_FAILURES", "0"),
        ("TESSERA_SOURCE_MAX_FAILURES", "-1"),
        ("TESSERA_API_KEY_FOREIGN_FORMATS", "yes"),
        ("TESSERA_WEBHOOK_ALLOW_PRIVATE", "sometimes"),
        ("TESSERA_DATABASE_REPLICA_URL", "mysql://x"),
    ] {
        let err = cfg(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{value}");
        assert!(err.to_string().contains(var));
    }
}

#[test]
fn guessing_limits_default_to_the_contract_and_proxies_parse() {
    let c = cfg(&[]).unwrap();
    assert!(c.trusted_proxies.is_empty());
    assert_eq!(c.source_max_failures, 30);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(c.argon2_workers as usize, cores);
    assert_eq!(c.login_max_failures, 5);
    assert_eq!(c.login_failure_window, Duration::from_secs(900));
    assert_eq!(c.login_lockout, Duration::from_secs(900));
    let c = cfg(&[
        ("TESSERA_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 ::ffff:172.16.0.0/108,fd00::/8"),
        ("TESSERA_ARGON2_WORKERS", "3"),
        ("TESSERA_SOURCE_MAX_FAILURES", "7"),
    ])
    .unwrap();
    let shown: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "172.16.0.0/12", "fd00::/8"]);
    assert_eq!(c.argon2_workers, 3);
    assert_eq!(c.source_max_failures, 7);
}

#[test]
fn database_url_falls_back_to_database_url_and_issuer_loses_trailing_slash() {
    let c = cfg(&[("DATABASE_URL", "postgres://x@h/db"), ("TESSERA_ISSUER", "https://id.example.com/")]).unwrap();
    assert_eq!(c.database_url.expose(), "postgres://x@h/db");
    assert_eq!(c.issuer, "https://id.example.com");
}

#[test]
fn debug_never_prints_a_secret_or_a_password() {
    let c = cfg(&[
        ("TESSERA_DATABASE_URL", "postgres://tessera:pg-pass-1@db:5432/tessera"),
        ("TESSERA_REDIS_URL", "redis://:redis-pass-2@cache:6379"),
        ("TESSERA_BOOTSTRAP_ADMIN_SECRET", "admin-secret-3-long-enough"),
        ("TESSERA_MASTER_KEY", "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio="),
    ])
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["pg-pass-1", "redis-pass-2", "admin-secret-3", "KioqKioq"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("db:5432") && shown.contains("cache:6379"), "hosts stay visible: {shown}");
}

/// Every `TESSERA_*` name the configuration reads is in docs/configuration.md, and the reference names
/// nothing the code does not read.
#[test]
fn the_reference_lists_every_variable_the_code_reads() {
    fn names(text: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("TESSERA_") {
            let tail = &rest[i..];
            let end =
                tail.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            let name = tail[..end].trim_end_matches('_');
            if name.len() > "TESSERA".len() {
                out.insert(name.to_owned());
            }
            rest = &tail[end..];
        }
        out
    }
    let code = names(&[include_str!("mod.rs"), include_str!("secrets.rs"), include_str!("webhooks.rs")].concat());
    let doc = names(include_str!("../../docs/configuration.md"));
    let missing: Vec<_> = code.difference(&doc).collect();
    let unknown: Vec<_> = doc.difference(&code).collect();
    assert!(missing.is_empty(), "read by src/config/ but not in docs/configuration.md: {missing:?}");
    assert!(unknown.is_empty(), "in docs/configuration.md but not read by src/config/: {unknown:?}");
}

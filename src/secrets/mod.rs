//! Secret material, by job: strings whose `Debug` never shows them ([`Secret`], [`RedactedUrl`]),
//! keyed hashes and constant-time comparison (here), the master key and the keys derived from it
//! ([`master`]), versioned HMAC keys ([`keyring`]), sealing at rest ([`seal`](mod@seal)), and randomness ([`random`]).

pub mod keyring;
mod master;
mod random;
mod seal;

use std::fmt;

use ring::hmac;

pub use keyring::{KeyId, Keyring, Version, VersionedKey};
pub use master::{derive_keys, DerivedKeys, HmacSecret, KeySources, MasterKey, PreviousHmac};
pub use random::{base62_fixed, derived_base62, fill_random, is_base62, random_base62, random_urlsafe, token_id};
pub use seal::{open, seal, Opened, Sealer};

/// A secret string (password, client secret, token) whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A service URL (Postgres, Redis) that may carry a password, in the userinfo or in the query.
/// `Debug` and `Display` show it with the password replaced, so a configuration dump or an error
/// line can name the host without leaking the credential; [`RedactedUrl::expose`] gives it whole.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }
    /// The URL itself, password included: only to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `[redacted]`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return "[redacted]".to_owned();
        };
        let (head, rest) = url.split_at(scheme_end);
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:[redacted]@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        // A password may also come as a query parameter (`?password=…` for Postgres).
        let tail = match tail.split_once('?') {
            Some((path, query)) if query.to_ascii_lowercase().contains("password") => format!("{path}?[redacted]"),
            _ => tail.to_owned(),
        };
        format!("{head}{authority}{tail}")
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn keyed_hash(key: &hmac::Key, data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(key, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time equality of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_urls_print_without_their_passwords() {
        for (url, shown) in [
            (
                "postgres://tessera:hunter2@db.internal:5432/tessera",
                "postgres://tessera:[redacted]@db.internal:5432/tessera",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
            ("postgres://db/tessera?user=t&password=hunter2", "postgres://db/tessera?[redacted]"),
            ("postgres://postgres@127.0.0.1:5432/tessera", "postgres://postgres@127.0.0.1:5432/tessera"),
            ("hunter2", "[redacted]"),
        ] {
            let u = RedactedUrl::new(url);
            assert_eq!(u.to_string(), shown);
            assert!(!format!("{u:?}").contains("hunter2"));
            assert_eq!(u.expose(), url);
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret([redacted])");
    }
}

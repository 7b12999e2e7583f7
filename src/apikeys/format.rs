//! The API-key wire format: `tsk_live_` or `tsk_test_`, 32 random base62 characters (≈190.5 bits),
//! then 6 base62 characters of a CRC32 over everything before them. The checksum lets a mistyped or
//! truncated key be refused before any lookup; it is not a secret and proves nothing about origin.

use std::fmt;

use ring::hmac;
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::secrets::{self, keyed_hash};

/// Random base62 characters after the prefix: 32 × log2(62) ≈ 190.5 bits.
pub const BODY_LEN: usize = 32;
/// Base62 characters of the CRC32 at the end (62^6 > 2^32, so every CRC fits).
pub const CHECKSUM_LEN: usize = 6;
/// Length of the environment prefix (`tsk_live_` / `tsk_test_`).
pub const PREFIX_LEN: usize = 9;
/// Length of a whole key.
pub const KEY_LEN: usize = PREFIX_LEN + BODY_LEN + CHECKSUM_LEN;
/// Characters shown for display (`start`).
pub const START_LEN: usize = 12;
/// Version of the keyed hash stored with each key (HMAC-SHA-256 under `api_key_hmac_v1`).
pub const HASH_VERSION: i16 = 1;
/// Version of the keyed hash of an imported key: HMAC-SHA-256 (same key) of the SHA-256 of the
/// plaintext, which is what other systems hand over. Only the keyed value is stored.
pub const HASH_VERSION_IMPORTED: i16 = 2;
/// Shortest key from another system accepted when foreign formats are on.
pub const FOREIGN_MIN_LEN: usize = 16;
/// Longest key from another system accepted when foreign formats are on.
pub const FOREIGN_MAX_LEN: usize = 256;

/// Which environment a key belongs to; part of the key itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = "live")]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Production traffic.
    Live,
    /// Test traffic.
    Test,
}

impl Environment {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(Self::Live),
            "test" => Some(Self::Test),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Live => "tsk_live_",
            Self::Test => "tsk_test_",
        }
    }
}

/// A plaintext API key. `Debug` is redacted; it is serialized only where it is shown once.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKeySecret(String);

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret([redacted])")
    }
}

impl ApiKeySecret {
    /// A fresh key for `env`, from the OS CSPRNG.
    pub fn generate(env: Environment) -> Self {
        let mut key = String::with_capacity(KEY_LEN);
        key.push_str(env.prefix());
        key.push_str(&secrets::random_base62(BODY_LEN));
        let sum = checksum(&key);
        key.push_str(&sum);
        Self(key)
    }

    /// Wraps a presented key (not yet checked).
    pub fn presented(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The key itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first [`START_LEN`] characters, for display.
    pub fn start(&self) -> String {
        self.0.chars().take(START_LEN).collect()
    }

    /// The keyed hash stored for this key.
    pub fn hash(&self, key: &hmac::Key) -> [u8; 32] {
        keyed_hash(key, self.0.as_bytes())
    }

    /// The keyed hash stored for this key had it been imported by its SHA-256 (hash version
    /// [`HASH_VERSION_IMPORTED`]): HMAC-SHA-256 of the SHA-256 of the plaintext.
    pub fn imported_hash(&self, key: &hmac::Key) -> [u8; 32] {
        imported_hash(key, &sha256(self.0.as_bytes()))
    }

    /// Both hashes this key may be stored under with HMAC key `key`.
    pub fn hashes(&self, key: &hmac::Key) -> KeyHashes {
        KeyHashes { created: self.hash(key), imported: self.imported_hash(key) }
    }
}

/// The two hashes a presented key may be stored under, for one HMAC key: as created here (hash
/// version [`HASH_VERSION`]) and as imported by its SHA-256 ([`HASH_VERSION_IMPORTED`]). Looked up
/// together in one statement (`store::BY_EITHER_HASH`).
#[derive(Debug, Clone, Copy)]
pub struct KeyHashes {
    /// Version 1: HMAC-SHA-256 of the plaintext.
    pub created: [u8; 32],
    /// Version 2: HMAC-SHA-256 of the plaintext's SHA-256.
    pub imported: [u8; 32],
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// The stored keyed hash (version [`HASH_VERSION_IMPORTED`]) of a key known only by the SHA-256
/// of its plaintext.
pub fn imported_hash(key: &hmac::Key, sha256_of_key: &[u8; 32]) -> [u8; 32] {
    keyed_hash(key, sha256_of_key)
}

/// Whether `candidate` may be a key from another system: 16 to 256 visible ASCII characters, no
/// spaces. Looked up as an imported key only, and only when foreign formats are enabled.
pub fn is_foreign(candidate: &str) -> bool {
    (FOREIGN_MIN_LEN..=FOREIGN_MAX_LEN).contains(&candidate.len()) && candidate.bytes().all(|b| b.is_ascii_graphic())
}

/// Serializes the plaintext; used by the one response that shows it.
pub fn expose<S: Serializer>(secret: &ApiKeySecret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

fn checksum(head: &str) -> String {
    secrets::base62_fixed(u64::from(crc32fast::hash(head.as_bytes())), CHECKSUM_LEN)
}

/// The environment of a well-formed key: right length, prefix, alphabet and checksum. `None` means
/// MALFORMED, decided without any lookup.
pub fn parse(candidate: &str) -> Option<Environment> {
    if candidate.len() != KEY_LEN || !candidate.is_ascii() {
        return None;
    }
    let env = if candidate.starts_with(Environment::Live.prefix()) {
        Environment::Live
    } else if candidate.starts_with(Environment::Test.prefix()) {
        Environment::Test
    } else {
        return None;
    };
    let (head, sum) = candidate.split_at(PREFIX_LEN + BODY_LEN);
    if !secrets::is_base62(&head[PREFIX_LEN..]) || !secrets::is_base62(sum) {
        return None;
    }
    (checksum(head) == sum).then_some(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_has_the_documented_shape_and_parses() {
        for env in [Environment::Live, Environment::Test] {
            let k = ApiKeySecret::generate(env);
            let s = k.expose();
            assert_eq!(s.len(), KEY_LEN);
            assert!(s.starts_with(&format!("tsk_{}_", env.as_str())));
            assert!(secrets::is_base62(&s[PREFIX_LEN..]));
            assert_eq!(parse(s), Some(env));
            assert_eq!(k.start(), &s[..START_LEN]);
        }
    }

    #[test]
    fn keys_are_distinct() {
        let a = ApiKeySecret::generate(Environment::Live);
        let b = ApiKeySecret::generate(Environment::Live);
        assert_ne!(a, b);
    }

    #[test]
    fn every_single_character_typo_is_malformed() {
        let k = ApiKeySecret::generate(Environment::Live);
        let s = k.expose().to_owned();
        for i in PREFIX_LEN..s.len() {
            let mut bytes = s.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(parse(&typo), None, "typo at {i} accepted");
        }
    }

    #[test]
    fn swapped_neighbours_truncation_and_wrong_prefix_are_malformed() {
        let s = ApiKeySecret::generate(Environment::Test).expose().to_owned();
        let mut swapped = s.clone().into_bytes();
        let i = (PREFIX_LEN..s.len() - 1).find(|&i| swapped[i] != swapped[i + 1]).unwrap();
        swapped.swap(i, i + 1);
        assert_eq!(parse(&String::from_utf8(swapped).unwrap()), None);
        assert_eq!(parse(&s[..s.len() - 1]), None);
        assert_eq!(parse(&format!("{s}x")), None);
        assert_eq!(parse(&s.replacen("tsk_test_", "tsk_live_", 1)), None);
        assert_eq!(parse(&s.replacen("tsk_test_", "tsk_prod_", 1)), None);
        assert_eq!(parse(""), None);
        assert_eq!(parse(&"é".repeat(KEY_LEN / 2)), None);
    }

    #[test]
    fn debug_never_prints_the_key() {
        let k = ApiKeySecret::generate(Environment::Live);
        assert!(!format!("{k:?}").contains(&k.expose()[PREFIX_LEN..]));
    }

    #[test]
    fn the_imported_hash_is_keyed_over_the_sha256() {
        let k = ApiKeySecret::presented("sk_other_0123456789abcdef");
        let a = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let b = hmac::Key::new(hmac::HMAC_SHA256, &[2; 32]);
        let sha = sha256(k.expose().as_bytes());
        assert_eq!(k.imported_hash(&a), imported_hash(&a, &sha));
        assert_ne!(k.imported_hash(&a), k.imported_hash(&b));
        assert_ne!(k.imported_hash(&a), k.hash(&a));
        assert!(is_foreign(k.expose()));
        assert!(!is_foreign("short"));
        assert!(!is_foreign("has a space in it, long enough"));
        assert!(!is_foreign(&"x".repeat(257)));
    }

    #[test]
    fn the_hash_is_keyed() {
        let k = ApiKeySecret::generate(Environment::Live);
        let a = hmac::Key::new(hmac::HMAC_SHA256, &[1; 32]);
        let b = hmac::Key::new(hmac::HMAC_SHA256, &[2; 32]);
        assert_eq!(k.hash(&a), k.hash(&a));
        assert_ne!(k.hash(&a), k.hash(&b));
    }
}

//! Secret material: the master key, keys derived from it, redacted secret strings,
//! random token bodies, keyed hashes and constant-time comparison.

use std::{fmt, path::Path};

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{aead, hkdf, hmac, rand::SecureRandom};

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

/// The 32-byte master key that everything else is derived from.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, String> {
        let trimmed = s.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
            .map_err(|_| "must be base64".to_owned())?;
        let arr: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("must decode to exactly 32 bytes, got {}", b.len()))?;
        Ok(Self(arr))
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        fill_random(&mut k);
        Self(k)
    }

    /// Base64 of the key, for writing the development key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Reads the development key file, creating it (mode 0600) when missing.
    pub fn load_or_create_dev_file(path: &Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_base64(&s)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let key = Self::generate();
                write_private_file(path, key.to_base64().as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    fn derive(&self, label: &'static [u8]) -> [u8; 32] {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tessera/v1");
        let prk = salt.extract(&self.0);
        let info = [label];
        let mut out = [0u8; 32];
        // HKDF-SHA256 can always expand 32 bytes; a failure here is impossible by construction.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut out);
        }
        out
    }

    /// Derives the independent keys Tessera uses.
    pub fn derive_keys(&self) -> DerivedKeys {
        DerivedKeys {
            refresh_token_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"refresh-token-hmac")),
            api_key_hmac_v1: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"api-key-hmac-v1")),
            client_secret_cache: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"client-secret-cache")),
            client_secret_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"client-secret-hmac")),
            signing_key_wrap: self.derive(b"signing-key-wrap"),
        }
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Keys derived from the master key with HKDF, one per purpose.
#[derive(Clone)]
pub struct DerivedKeys {
    /// Keyed hash of refresh tokens.
    pub refresh_token_hmac: hmac::Key,
    /// Keyed hash of API keys (hash version 1).
    pub api_key_hmac_v1: hmac::Key,
    /// Keyed hash of (client, secret) pairs remembered after a successful Argon2 check.
    pub client_secret_cache: hmac::Key,
    /// Keyed hash of client secrets the service generated (stored instead of Argon2).
    pub client_secret_hmac: hmac::Key,
    /// AES-256-GCM key that wraps signing keys at rest.
    pub signing_key_wrap: [u8; 32],
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKeys([redacted])")
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

/// Fills `buf` from the OS CSPRNG.
#[expect(clippy::panic, reason = "no entropy source at all: nothing can be issued safely, so the process stops")]
pub fn fill_random(buf: &mut [u8]) {
    // SystemRandom only fails when the OS has no entropy source at all; nothing can be issued safely then.
    if ring::rand::SystemRandom::new().fill(buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
}

/// A UUIDv7 for an access token's `jti`: the current millisecond, then 74 bits from rand's
/// thread-local CSPRNG (ChaCha, seeded and reseeded from the OS). A `jti` must be unique, not
/// secret. `Uuid::now_v7` took those bits from the kernel, one `getrandom` syscall per token on top
/// of the one ring's ECDSA makes for its nonce (measured here: ~450 ns a call).
pub fn token_id() -> uuid::Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` uniformly random base62 characters (rejection sampling, no modulo bias).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill_random(&mut buf);
        for &b in &buf {
            // 248 = 4 * 62: bytes above it would bias the distribution.
            if b < 248 {
                out.push(BASE62[(b % 62) as usize] as char);
                if out.len() == len {
                    break;
                }
            }
        }
    }
    out
}

/// `n` encoded in exactly `width` base62 characters (most significant first).
pub fn base62_fixed(mut n: u64, width: usize) -> String {
    let mut chars = vec![b'0'; width];
    for slot in chars.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&chars).into_owned()
}

/// Whether every byte of `s` is a base62 character.
pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// URL-safe base64 of `n` random bytes.
pub fn random_urlsafe(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fill_random(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Encrypts with AES-256-GCM under `key`; `aad` binds the ciphertext to its context. Output: nonce || ciphertext+tag.
#[expect(clippy::panic, reason = "a 32-byte key and an input under 64 GiB cannot fail: a failure is a broken build")]
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    fill_random(&mut nonce);
    let mut in_out = plaintext.to_vec();
    // AES-256 keys of 32 bytes and inputs under 64 GiB cannot fail.
    let sealed = aead::UnboundKey::new(&aead::AES_256_GCM, key).map(aead::LessSafeKey::new).and_then(|k| {
        k.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), &mut in_out)
    });
    if sealed.is_err() {
        panic!("AES-256-GCM sealing failed");
    }
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    out
}

/// Decrypts what [`seal`] produced; `None` if the key, context or ciphertext is wrong.
pub fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(12);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let k = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, key).ok()?);
    let mut buf = ct.to_vec();
    let plain = k.open_in_place(nonce, aead::Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents)?;
    f.sync_all()
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
    fn token_ids_are_unique_v7_uuids_of_the_current_time() {
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
        let ids: std::collections::HashSet<uuid::Uuid> = (0..10_000).map(|_| token_id()).collect();
        let after = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
        assert_eq!(ids.len(), 10_000);
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().expect("v7 timestamp").to_unix();
            let millis = u128::from(secs) * 1000 + u128::from(nanos / 1_000_000);
            assert!((before..=after).contains(&millis), "{millis} outside {before}..={after}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret([redacted])");
    }

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"kid-1", b"private");
        assert_eq!(open(&key, b"kid-1", &sealed).as_deref(), Some(&b"private"[..]));
        assert!(open(&key, b"kid-2", &sealed).is_none());
        assert!(open(&[8u8; 32], b"kid-1", &sealed).is_none());
    }

    #[test]
    fn base62_is_fixed_width_and_random_is_base62() {
        assert_eq!(base62_fixed(0, 6), "000000");
        assert_eq!(base62_fixed(61, 2), "0z");
        let r = random_base62(40);
        assert_eq!(r.len(), 40);
        assert!(is_base62(&r));
    }

    #[test]
    fn master_key_needs_32_bytes() {
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 31])).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }
}

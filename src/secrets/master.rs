//! The master key, from which every other key is derived with HKDF-SHA-256 (RFC 5869), and the
//! development key file used when none is configured.

use std::{fmt, path::Path};

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{hkdf, hmac};

use super::{
    fill_random,
    keyring::{Keyring, VersionedKey},
    seal::Sealer,
};

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

    /// The 32 bytes: input keying material for [`derive_keys`].
    fn material(&self) -> &[u8] {
        &self.0
    }
}

/// An operator-chosen root for the keyed hashes (`TESSERA_HMAC_SECRET`): at least 32 bytes, used
/// as HKDF input keying material. `Debug` never shows it.
#[derive(Clone)]
pub struct HmacSecret(Vec<u8>);

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSecret([redacted])")
    }
}

impl HmacSecret {
    /// The shortest accepted secret, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Takes the variable's value as it is (its UTF-8 bytes). Errors: shorter than [`Self::MIN_LEN`].
    pub fn new(value: &str) -> Result<Self, String> {
        if value.len() < Self::MIN_LEN {
            return Err(format!("must be at least {} characters (e.g. `openssl rand -base64 32`)", Self::MIN_LEN));
        }
        Ok(Self(value.as_bytes().to_vec()))
    }
}

/// The previous root of the keyed hashes (`TESSERA_HMAC_SECRET_PREVIOUS`).
#[derive(Clone, Debug)]
pub enum PreviousHmac {
    /// An earlier `TESSERA_HMAC_SECRET`.
    Secret(HmacSecret),
    /// The value `derived`: the keys derived from the master key, which Tessera uses while
    /// `TESSERA_HMAC_SECRET` is unset — for moving from no HMAC secret to one.
    DerivedFromMaster,
}

/// Everything the derived keys come from, as configured.
#[derive(Clone, Copy, Debug)]
pub struct KeySources<'a> {
    /// `TESSERA_MASTER_KEY` (or the development key).
    pub master: &'a MasterKey,
    /// `TESSERA_MASTER_KEY_PREVIOUS`.
    pub master_previous: Option<&'a MasterKey>,
    /// `TESSERA_HMAC_SECRET`.
    pub hmac: Option<&'a HmacSecret>,
    /// `TESSERA_HMAC_SECRET_PREVIOUS`.
    pub hmac_previous: Option<&'a PreviousHmac>,
}

fn hkdf32(ikm: &[u8], label: &'static [u8]) -> [u8; 32] {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tessera/v1");
    let prk = salt.extract(ikm);
    let info = [label];
    let mut out = [0u8; 32];
    // HKDF-SHA256 can always expand 32 bytes; a failure here is impossible by construction.
    if let Ok(okm) = prk.expand(&info, Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Derives every key Tessera uses with HKDF-SHA-256 (RFC 5869), one label per purpose.
///
/// Sealing keys come from the master key (and the previous master key, for opening only). Keyed
/// hashes come from `TESSERA_HMAC_SECRET` when set, else from the master key; their previous keys
/// from `TESSERA_HMAC_SECRET_PREVIOUS`, or — while no HMAC secret is set — from the previous master
/// key, so that replacing the master key alone keeps every API key and refresh token verifying.
pub fn derive_keys(src: KeySources<'_>) -> DerivedKeys {
    let hmac_root: &[u8] = src.hmac.map_or(src.master.material(), |h| &h.0);
    let hmac_previous: Option<&[u8]> = match src.hmac_previous {
        Some(PreviousHmac::Secret(h)) => Some(&h.0),
        Some(PreviousHmac::DerivedFromMaster) => Some(src.master.material()),
        None if src.hmac.is_none() => src.master_previous.map(MasterKey::material),
        None => None,
    };
    let ring = |label: &'static [u8]| {
        Keyring::new(
            VersionedKey::new(&hkdf32(hmac_root, label)),
            hmac_previous.map(|p| VersionedKey::new(&hkdf32(p, label))),
        )
    };
    let key = |label: &'static [u8]| hmac::Key::new(hmac::HMAC_SHA256, &hkdf32(hmac_root, label));
    DerivedKeys {
        refresh_token: ring(b"refresh-token-hmac"),
        refresh_successor: key(b"refresh-successor-v1"),
        api_key: ring(b"api-key-hmac-v1"),
        client_secret_cache: key(b"client-secret-cache"),
        client_secret: ring(b"client-secret-hmac"),
        // Short-lived (codes live 60 s, sessions hours): current key only, a change of secret
        // ends them, as a sign-out would.
        authorization_code_hmac: key(b"authorization-code-hmac"),
        session_hmac: key(b"signin-session-hmac"),
        csrf_hmac: key(b"signin-csrf-hmac"),
        portal_hmac: key(b"portal-session-hmac"),
        sealer: Sealer::new(
            hkdf32(src.master.material(), b"signing-key-wrap"),
            src.master_previous.map(|p| hkdf32(p.material(), b"signing-key-wrap")),
        ),
        webhook_sealer: Sealer::new(
            hkdf32(src.master.material(), b"webhook-secret-wrap"),
            src.master_previous.map(|p| hkdf32(p.material(), b"webhook-secret-wrap")),
        ),
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Keys derived from the master key and the HMAC secret with HKDF, one per purpose.
#[derive(Clone)]
pub struct DerivedKeys {
    /// Keyed hash of refresh tokens.
    pub refresh_token: Keyring,
    /// Derives a refresh token's successor from the token itself, so a retried rotation can
    /// answer with the same successor without its plaintext ever being stored.
    pub refresh_successor: hmac::Key,
    /// Keyed hash of API keys.
    pub api_key: Keyring,
    /// Keyed hash of (client, secret) pairs remembered after a successful Argon2 check.
    pub client_secret_cache: hmac::Key,
    /// Keyed hash of client secrets the service generated (stored instead of Argon2).
    pub client_secret: Keyring,
    /// AES-256-GCM sealing of private material at rest (signing keys).
    pub sealer: Sealer,
    /// AES-256-GCM sealing of webhook endpoint secrets (they must be recoverable to sign).
    pub webhook_sealer: Sealer,
    /// Keyed hash of authorization codes (stored instead of the codes).
    pub authorization_code_hmac: hmac::Key,
    /// Keyed hash of browser sign-in session cookies (stored instead of the cookies).
    pub session_hmac: hmac::Key,
    /// Derives the sign-in form's CSRF token from the browser's CSRF cookie.
    pub csrf_hmac: hmac::Key,
    /// Keyed hash of portal session cookies, the portal's CSRF tokens and its sign-in cookie's MAC.
    pub portal_hmac: hmac::Key,
}

impl fmt::Debug for DerivedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKeys([redacted])")
    }
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
    fn master_key_needs_32_bytes() {
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 32])).is_ok());
        assert!(MasterKey::from_base64(&STANDARD.encode([1u8; 31])).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    fn sources<'a>(m: &'a MasterKey) -> KeySources<'a> {
        KeySources { master: m, master_previous: None, hmac: None, hmac_previous: None }
    }

    #[test]
    fn replacing_the_master_key_keeps_the_old_hashes_and_seals_readable() {
        let (old, new) = (MasterKey::from_base64(&STANDARD.encode([1u8; 32])).unwrap(), MasterKey::generate());
        let before = derive_keys(sources(&old));
        let during = derive_keys(KeySources { master_previous: Some(&old), ..sources(&new) });
        assert_eq!(during.api_key.previous().unwrap().id(), before.api_key.current().id());
        assert_ne!(during.api_key.current().id(), before.api_key.current().id());
        let sealed = before.sealer.seal(b"kid", b"pkcs8");
        assert!(during.sealer.open(b"kid", &sealed).unwrap().under_previous);
    }

    #[test]
    fn an_hmac_secret_replaces_the_master_derived_hashes_only_with_derived_as_previous() {
        let m = MasterKey::generate();
        let secret = HmacSecret::new(&"s".repeat(32)).unwrap();
        assert!(HmacSecret::new("short").is_err());
        let plain = derive_keys(sources(&m));
        let with = derive_keys(KeySources { hmac: Some(&secret), ..sources(&m) });
        assert_ne!(with.api_key.current().id(), plain.api_key.current().id());
        assert!(with.api_key.previous().is_none());
        let prev = PreviousHmac::DerivedFromMaster;
        let moving = derive_keys(KeySources { hmac: Some(&secret), hmac_previous: Some(&prev), ..sources(&m) });
        assert_eq!(moving.api_key.previous().unwrap().id(), plain.api_key.current().id());
        assert!(!format!("{secret:?}").contains('s'.to_string().repeat(32).as_str()));
    }
}

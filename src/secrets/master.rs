//! The master key, from which every other key is derived with HKDF-SHA-256 (RFC 5869), and the
//! development key file used when none is configured.

use std::{fmt, path::Path};

use base64::{engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{hkdf, hmac};

use super::fill_random;

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
            refresh_successor: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"refresh-successor-v1")),
            api_key_hmac_v1: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"api-key-hmac-v1")),
            client_secret_cache: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"client-secret-cache")),
            client_secret_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"client-secret-hmac")),
            signing_key_wrap: self.derive(b"signing-key-wrap"),
            authorization_code_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"authorization-code-hmac")),
            session_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"signin-session-hmac")),
            csrf_hmac: hmac::Key::new(hmac::HMAC_SHA256, &self.derive(b"signin-csrf-hmac")),
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
    /// Derives a refresh token's successor from the token itself, so a retried rotation can
    /// answer with the same successor without its plaintext ever being stored.
    pub refresh_successor: hmac::Key,
    /// Keyed hash of API keys (hash version 1).
    pub api_key_hmac_v1: hmac::Key,
    /// Keyed hash of (client, secret) pairs remembered after a successful Argon2 check.
    pub client_secret_cache: hmac::Key,
    /// Keyed hash of client secrets the service generated (stored instead of Argon2).
    pub client_secret_hmac: hmac::Key,
    /// AES-256-GCM key that wraps signing keys at rest.
    pub signing_key_wrap: [u8; 32],
    /// Keyed hash of authorization codes (stored instead of the codes).
    pub authorization_code_hmac: hmac::Key,
    /// Keyed hash of browser sign-in session cookies (stored instead of the cookies).
    pub session_hmac: hmac::Key,
    /// Derives the sign-in form's CSRF token from the browser's CSRF cookie.
    pub csrf_hmac: hmac::Key,
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
}

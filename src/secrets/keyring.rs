//! Versioned HMAC keys: the key new hashes are made with, and the previous one that keeps the
//! hashes made before a change of secret verifying until they are gone (re-hashed on use, rotated
//! or expired). Each key is named by a [`KeyId`] derived from the key itself, stored beside every
//! hash, so a report can count what remains under each key without ever holding the secret.

use std::fmt;

use ring::hmac;

use super::keyed_hash;

/// Names an HMAC key without revealing it: the first 8 bytes of `HMAC(key, "tessera/key-id")`.
pub type KeyId = [u8; 8];

/// One HMAC-SHA-256 key and its id.
#[derive(Clone)]
pub struct VersionedKey {
    id: KeyId,
    key: hmac::Key,
}

impl VersionedKey {
    /// A key from 32 bytes of key material.
    pub fn new(material: &[u8; 32]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, material);
        let tag = keyed_hash(&key, b"tessera/key-id");
        let mut id = [0u8; 8];
        id.copy_from_slice(&tag[..8]);
        Self { id, key }
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key's id in hex (16 characters), as reports show it.
    pub fn id_hex(&self) -> String {
        hex(&self.id)
    }

    /// HMAC-SHA-256 of `data`.
    pub fn hash(&self, data: &[u8]) -> [u8; 32] {
        keyed_hash(&self.key, data)
    }

    /// The underlying key.
    pub fn key(&self) -> &hmac::Key {
        &self.key
    }
}

impl fmt::Debug for VersionedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionedKey({})", self.id_hex())
    }
}

/// The current key and, during a change of secret, the previous one.
#[derive(Clone, Debug)]
pub struct Keyring {
    current: VersionedKey,
    previous: Option<VersionedKey>,
}

/// Which key of a [`Keyring`] an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The key new hashes are made with.
    Current,
    /// The previous key, still accepted.
    Previous,
    /// Neither: hashes under it no longer verify.
    Retired,
}

impl Version {
    /// `current`, `previous` or `retired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
            Self::Retired => "retired",
        }
    }
}

impl Keyring {
    /// A ring of `current` and an optional `previous`. A previous key equal to the current one is dropped.
    pub fn new(current: VersionedKey, previous: Option<VersionedKey>) -> Self {
        let previous = previous.filter(|p| p.id != current.id);
        Self { current, previous }
    }

    /// The key new hashes are made with.
    pub fn current(&self) -> &VersionedKey {
        &self.current
    }

    /// The previous key, while one is configured.
    pub fn previous(&self) -> Option<&VersionedKey> {
        self.previous.as_ref()
    }

    /// Every accepted key, current first.
    pub fn accepted(&self) -> impl Iterator<Item = &VersionedKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }

    /// The hashes of `data` under every accepted key, current first (one or two).
    pub fn hashes(&self, data: &[u8]) -> Vec<[u8; 32]> {
        self.accepted().map(|k| k.hash(data)).collect()
    }

    /// The accepted key named `id`, if any.
    pub fn find(&self, id: &[u8]) -> Option<&VersionedKey> {
        self.accepted().find(|k| k.id[..] == *id)
    }

    /// What `id` names in this ring.
    pub fn version_of(&self, id: &[u8]) -> Version {
        if self.current.id[..] == *id {
            Version::Current
        } else if self.previous.as_ref().is_some_and(|p| p.id[..] == *id) {
            Version::Previous
        } else {
            Version::Retired
        }
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_keys_and_rings_accept_both() {
        let a = VersionedKey::new(&[1; 32]);
        let b = VersionedKey::new(&[2; 32]);
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), VersionedKey::new(&[1; 32]).id());
        let ring = Keyring::new(b.clone(), Some(a.clone()));
        assert_eq!(ring.hashes(b"x"), vec![b.hash(b"x"), a.hash(b"x")]);
        assert_eq!(ring.version_of(&b.id()), Version::Current);
        assert_eq!(ring.version_of(&a.id()), Version::Previous);
        assert_eq!(ring.version_of(&[0; 8]), Version::Retired);
        assert!(ring.find(&a.id()).is_some());
        assert_eq!(Keyring::new(a.clone(), Some(a.clone())).accepted().count(), 1);
        assert!(!format!("{a:?}").contains("key:"));
    }
}

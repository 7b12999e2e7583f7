//! Sealing at rest: AES-256-GCM with a random 96-bit nonce, bound to its context by the
//! associated data (a signing key's `kid`). A [`Sealer`] seals under the current master key's
//! wrapping key and opens under it or, while a master key is being replaced, the previous one.

use std::fmt;

use ring::aead;

use super::fill_random;

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

/// What [`Sealer::open`] found.
pub struct Opened {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// Whether it was sealed under the previous key (and should be re-sealed).
    pub under_previous: bool,
}

/// Seals under the current wrapping key; opens under the current or the previous one.
#[derive(Clone)]
pub struct Sealer {
    current: [u8; 32],
    previous: Option<[u8; 32]>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer([redacted], previous: {})", self.previous.is_some())
    }
}

impl Sealer {
    /// A sealer with `current` and, during a master-key change, `previous`.
    pub fn new(current: [u8; 32], previous: Option<[u8; 32]>) -> Self {
        Self { current, previous: previous.filter(|p| *p != current) }
    }

    /// Seals `plaintext` under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(&self.current, aad, plaintext)
    }

    /// Opens `sealed` under the current key, else the previous one; `None` if neither opens it.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Opened> {
        if let Some(plaintext) = open(&self.current, aad, sealed) {
            return Some(Opened { plaintext, under_previous: false });
        }
        let previous = self.previous.as_ref()?;
        open(previous, aad, sealed).map(|plaintext| Opened { plaintext, under_previous: true })
    }

    /// Whether a previous key is configured.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_aad() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"kid-1", b"private");
        assert_eq!(open(&key, b"kid-1", &sealed).as_deref(), Some(&b"private"[..]));
        assert!(open(&key, b"kid-2", &sealed).is_none());
        assert!(open(&[8u8; 32], b"kid-1", &sealed).is_none());
    }

    #[test]
    fn a_sealer_opens_under_either_key_and_seals_under_the_current() {
        let old = Sealer::new([1; 32], None);
        let both = Sealer::new([2; 32], Some([1; 32]));
        let sealed_old = old.seal(b"k", b"v");
        let opened = both.open(b"k", &sealed_old).unwrap();
        assert!(opened.under_previous);
        assert_eq!(opened.plaintext, b"v");
        let sealed_new = both.seal(b"k", b"v");
        assert!(!both.open(b"k", &sealed_new).unwrap().under_previous);
        assert!(old.open(b"k", &sealed_new).is_none());
        assert!(!format!("{both:?}").contains('2'));
    }
}

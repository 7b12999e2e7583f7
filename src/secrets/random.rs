//! Randomness for secrets and identifiers: the OS CSPRNG for anything secret, base62 and
//! URL-safe encodings of it, and UUIDv7 token ids.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::rand::SecureRandom;

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

/// `len` base62 characters derived from `input` under `key`: HMAC-SHA-256 in counter mode
/// (`input || i`), rejection-sampled like [`random_base62`], so the output is as unpredictable as
/// a random one to anyone without `key`, and the same for the same input.
pub fn derived_base62(key: &ring::hmac::Key, input: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut counter: u8 = 0;
    let mut block = Vec::with_capacity(input.len() + 1);
    while out.len() < len {
        block.clear();
        block.extend_from_slice(input);
        block.push(counter);
        counter = counter.wrapping_add(1);
        for &b in ring::hmac::sign(key, &block).as_ref() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn derived_base62_is_deterministic_per_key_and_input() {
        let k1 = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"one");
        let k2 = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"two");
        let a = derived_base62(&k1, b"tsr_parent", 43);
        assert_eq!(a.len(), 43);
        assert!(is_base62(&a));
        assert_eq!(a, derived_base62(&k1, b"tsr_parent", 43));
        assert_ne!(a, derived_base62(&k2, b"tsr_parent", 43));
        assert_ne!(a, derived_base62(&k1, b"tsr_parenu", 43));
    }

    #[test]
    fn base62_is_fixed_width_and_random_is_base62() {
        assert_eq!(base62_fixed(0, 6), "000000");
        assert_eq!(base62_fixed(61, 2), "0z");
        let r = random_base62(40);
        assert_eq!(r.len(), 40);
        assert!(is_base62(&r));
    }
}

//! The sign-in form's CSRF defence: the browser holds a random cookie, the form carries its
//! HMAC-SHA-256 under a key of the master key's. A cross-site page can make a browser post the
//! form, but can neither read the cookie nor compute the token (the double-submit cookie pattern,
//! signed; OWASP CSRF Prevention Cheat Sheet).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::hmac;

use crate::secrets;

/// A new cookie value (256 bits).
pub fn new_cookie() -> String {
    secrets::random_base62(43)
}

/// The form token for `cookie`.
pub fn token_for(key: &hmac::Key, cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(secrets::keyed_hash(key, cookie.as_bytes()))
}

/// Whether `token` goes with `cookie` (compared in constant time).
pub fn check(key: &hmac::Key, cookie: &str, token: &str) -> bool {
    !cookie.is_empty()
        && cookie.len() <= 128
        && secrets::constant_time_eq(token_for(key, cookie).as_bytes(), token.as_bytes())
}

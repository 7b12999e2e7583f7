//! Endpoint secrets and signatures, per the Standard Webhooks scheme: the secret is `whsec_` and
//! base64 of 32 random bytes; each attempt is signed `v1,<base64 HMAC-SHA-256(secret bytes,
//! "<webhook-id>.<webhook-timestamp>.<body>")>`.

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine};
use ring::hmac;

use crate::secrets::fill_random;

/// Prefix of every endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The 32 secret bytes of one endpoint. `Debug` never shows them.
#[derive(Clone)]
pub struct EndpointSecret([u8; 32]);

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret([redacted])")
    }
}

impl EndpointSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        fill_random(&mut b);
        Self(b)
    }

    /// From its raw bytes (as unsealed); `None` unless exactly 32.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }

    /// The raw bytes, for sealing.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `whsec_<base64>`: the form shown once, at creation.
    pub fn display(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0))
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification.
        let raw = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("b64");
        let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}");
        let expected = format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()));
        assert_eq!(expected, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let s = EndpointSecret([9u8; 32]);
        assert!(s.display().starts_with("whsec_"));
        assert_eq!(format!("{s:?}"), "EndpointSecret([redacted])");
        assert_eq!(s.sign("msg_1", 5, b"{}"), s.sign("msg_1", 5, b"{}"));
        assert_ne!(s.sign("msg_1", 5, b"{}"), s.sign("msg_1", 6, b"{}"));
    }
}

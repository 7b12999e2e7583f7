//! Key material: generation (ring; RSA through the `rsa` crate, which ring cannot generate),
//! signers kept parsed in memory, verifiers built from the public JWK only.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use jsonwebtoken::{Algorithm, DecodingKey};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use serde_json::{json, Value};

use crate::{config::SigningAlg, error::Error};

/// A freshly generated key: private PKCS#8 DER (to be sealed) and public JWK.
pub struct Generated {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// PKCS#8 DER of the private key. Never leaves this process unencrypted.
    pub pkcs8: Vec<u8>,
    /// The public JWK, with `kid`, `alg` and `use`.
    pub jwk: Value,
}

/// Generates a key for `alg`.
pub fn generate(alg: SigningAlg) -> Result<Generated, Error> {
    let rng = SystemRandom::new();
    let (pkcs8, mut jwk) = match alg {
        SigningAlg::Es256 => {
            let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|_| Error::Internal("EC key generation failed".into()))?;
            let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
                .map_err(|_| Error::Internal("EC key parse failed".into()))?;
            // Uncompressed point: 0x04 || x || y.
            let point = kp.public_key().as_ref();
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});
            (doc.as_ref().to_vec(), jwk)
        }
        SigningAlg::EdDsa => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| Error::Internal("Ed25519 generation failed".into()))?;
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| Error::Internal("Ed25519 key parse failed".into()))?;
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())});
            (doc.as_ref().to_vec(), jwk)
        }
        SigningAlg::Rs256 => {
            use rsa::{pkcs8::EncodePrivateKey, traits::PublicKeyParts};
            let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
                .map_err(|e| Error::Internal(format!("RSA generation failed: {e}")))?;
            let der = key.to_pkcs8_der().map_err(|e| Error::Internal(format!("RSA encoding failed: {e}")))?;
            let jwk = json!({"kty": "RSA", "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be())});
            (der.as_bytes().to_vec(), jwk)
        }
    };
    let kid = thumbprint(&jwk);
    if let Some(obj) = jwk.as_object_mut() {
        obj.insert("kid".into(), Value::String(kid.clone()));
        obj.insert("alg".into(), Value::String(alg.as_str().into()));
        obj.insert("use".into(), Value::String("sig".into()));
    }
    Ok(Generated { kid, pkcs8, jwk })
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members in lexicographic order.
pub fn thumbprint(jwk: &Value) -> String {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str).unwrap_or("");
    let canonical = match s("kty") {
        "EC" => format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, s("crv"), s("x"), s("y")),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv"), s("x")),
        _ => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n")),
    };
    b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A parsed private key, ready to sign many times without re-parsing.
pub enum Signer {
    /// ES256.
    Ec(EcdsaKeyPair, SystemRandom),
    /// EdDSA.
    Ed(Ed25519KeyPair),
    /// RS256.
    Rsa(RsaKeyPair, SystemRandom),
}

impl Signer {
    /// Parses PKCS#8 DER for `alg`.
    pub fn from_pkcs8(alg: SigningAlg, der: &[u8]) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let bad = |_| Error::Internal("stored signing key does not parse".into());
        Ok(match alg {
            SigningAlg::Es256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).map_err(bad)?,
                rng,
            ),
            SigningAlg::EdDsa => Self::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(bad)?),
            SigningAlg::Rs256 => Self::Rsa(
                RsaKeyPair::from_pkcs8(der).map_err(|_| Error::Internal("stored RSA key does not parse".into()))?,
                rng,
            ),
        })
    }

    /// Signs `msg` (the JWS signing input).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = |_| Error::Internal("signing failed".into());
        match self {
            Self::Ec(kp, rng) => Ok(kp.sign(rng, msg).map_err(failed)?.as_ref().to_vec()),
            Self::Ed(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
            Self::Rsa(kp, rng) => {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, rng, msg, &mut sig).map_err(failed)?;
                Ok(sig)
            }
        }
    }
}

/// Builds a verifier from a stored public JWK. The algorithm comes from our own record, never a token.
pub fn verifier(alg: SigningAlg, jwk: &Value) -> Result<(Algorithm, DecodingKey), Error> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str).ok_or_else(|| Error::Internal(format!("JWK lacks {k}")));
    let bad = |e: jsonwebtoken::errors::Error| Error::Internal(format!("bad JWK: {e}"));
    Ok(match alg {
        SigningAlg::Es256 => (Algorithm::ES256, DecodingKey::from_ec_components(s("x")?, s("y")?).map_err(bad)?),
        SigningAlg::EdDsa => (Algorithm::EdDSA, DecodingKey::from_ed_components(s("x")?).map_err(bad)?),
        SigningAlg::Rs256 => (Algorithm::RS256, DecodingKey::from_rsa_components(s("n")?, s("e")?).map_err(bad)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_signs_and_verifies_through_its_jwk() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa, SigningAlg::Rs256] {
            let g = generate(alg).unwrap();
            assert_eq!(g.jwk["kid"], g.kid.as_str());
            assert!(g.jwk.get("d").is_none(), "private part must not be in the JWK");
            let signer = Signer::from_pkcs8(alg, &g.pkcs8).unwrap();
            let header = b64(format!(r#"{{"alg":"{}","kid":"{}","typ":"at+jwt"}}"#, alg.as_str(), g.kid).as_bytes());
            let payload = b64(br#"{"sub":"x","exp":4102444800}"#);
            let input = format!("{header}.{payload}");
            let sig = b64(&signer.sign(input.as_bytes()).unwrap());
            let (a, key) = verifier(alg, &g.jwk).unwrap();
            let mut v = jsonwebtoken::Validation::new(a);
            v.required_spec_claims.clear();
            v.validate_aud = false;
            let ok = jsonwebtoken::decode::<Value>(&format!("{input}.{sig}"), &key, &v);
            assert!(ok.is_ok(), "{alg:?}: {ok:?}");
        }
    }
}

//! Signing ceiling for `scripts/bench`: signs N RFC 9068 access tokens, single-threaded, through
//! the service's own code path (`tessera::tokens::jwt::sign` with an `ActiveKey` built the way
//! `signing::KeyStore` builds it), then times ring's raw signature alone on an input of the same
//! length.
//!
//! Usage: `bench_sign [N]` (default 20000); algorithm from `TESSERA_SIGNING_ALG` (default ES256).
//! Prints `key=value` lines for the script to read.
// A test or benchmark that cannot go on should stop loudly, where it is.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{collections::HashMap, sync::Arc, time::Instant};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair},
};
use tessera::{
    config::SigningAlg,
    signing::{
        material::{self, generate, Signer},
        ActiveKey, KeySet, Verifier,
    },
    tokens::jwt::{self, AccessClaims, Audience},
};
use uuid::Uuid;

/// One raw signature over a message; returns the signature length.
type RawSign = Box<dyn Fn(&[u8]) -> usize>;

const ISSUER: &str = "http://127.0.0.1:8080";

fn claims(now: i64) -> AccessClaims {
    // The same fields `tokens::issue_access_token` fills for a client-credentials grant.
    let scopes = ["bench:read".to_owned()];
    AccessClaims {
        iss: ISSUER.to_owned(),
        sub: "0190b5c4-7a1e-7c2d-9f3e-0123456789ab".to_owned(),
        aud: Audience::One(ISSUER.to_owned()),
        exp: now + 600,
        iat: now,
        jti: Uuid::now_v7().to_string(),
        client_id: "0190b5c4-7a1e-7c2d-9f3e-0123456789ab".to_owned(),
        scope: scopes.join(" "),
        sid: None,
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let alg_name = std::env::var("TESSERA_SIGNING_ALG").unwrap_or_else(|_| "ES256".into());
    let alg = SigningAlg::parse(alg_name.trim()).unwrap_or_else(|| panic!("unknown TESSERA_SIGNING_ALG {alg_name:?}"));

    // The key, built as signing::KeyStore::build does for the active row.
    let g = generate(alg).expect("key generation");
    let signer = Signer::from_pkcs8(alg, &g.pkcs8).expect("pkcs8 parses");
    let header = format!(r#"{{"alg":"{}","kid":"{}","typ":"at+jwt"}}"#, alg.as_str(), g.kid);
    let active = Arc::new(ActiveKey { kid: g.kid.clone(), alg, header_b64: URL_SAFE_NO_PAD.encode(header), signer });

    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Sanity: a token from this path verifies through the service's own verifier.
    let sample = jwt::sign(&active, &claims(now)).expect("sign");
    let (jalg, key) = material::verifier(alg, &g.jwk).expect("verifier");
    let mut verifiers = HashMap::new();
    verifiers.insert(g.kid.clone(), Verifier { alg: jalg, key });
    let set = KeySet {
        active: Some(Arc::clone(&active)),
        verifiers,
        jwks: Default::default(),
        etag: bytes::Bytes::from_static(b"\"bench\""),
        fingerprint: String::new(),
        id_token: None,
        id_token_verifiers: Default::default(),
    };
    jwt::verify(&set, &sample, ISSUER, now).expect("the benchmark's token must verify");

    // Warm up, then the service path: claims (incl. the v7 jti) + JSON + base64 + signature.
    for _ in 0..(n / 20).max(100) {
        std::hint::black_box(jwt::sign(&active, &claims(now)).expect("sign"));
    }
    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..n {
        let t = jwt::sign(&active, &claims(now)).expect("sign");
        bytes += t.len();
        std::hint::black_box(t);
    }
    let path_secs = started.elapsed().as_secs_f64();

    // ring alone, on a signing input of the same length as the service's.
    let input_len = sample.rfind('.').unwrap_or(sample.len());
    let msg = vec![b'a'; input_len];
    let rng = SystemRandom::new();
    let ring_sign: RawSign = match alg {
        SigningAlg::Es256 => {
            let kp =
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &g.pkcs8, &rng).expect("ec key");
            Box::new(move |m| kp.sign(&rng, m).expect("sign").as_ref().len())
        }
        SigningAlg::EdDsa => {
            let kp = Ed25519KeyPair::from_pkcs8(&g.pkcs8).expect("ed key");
            Box::new(move |m| kp.sign(m).as_ref().len())
        }
        SigningAlg::Rs256 => {
            let kp = RsaKeyPair::from_pkcs8(&g.pkcs8).expect("rsa key");
            Box::new(move |m| {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig).expect("sign");
                sig.len()
            })
        }
    };
    for _ in 0..(n / 20).max(100) {
        std::hint::black_box(ring_sign(&msg));
    }
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(ring_sign(std::hint::black_box(&msg)));
    }
    let ring_secs = started.elapsed().as_secs_f64();

    println!("alg={}", alg.as_str());
    println!("tokens={n}");
    println!("token_bytes={}", bytes / n.max(1));
    println!("signing_input_bytes={input_len}");
    println!("sign_tokens_per_sec={:.0}", n as f64 / path_secs);
    println!("sign_us_per_token={:.2}", path_secs * 1e6 / n as f64);
    println!("ring_sign_per_sec={:.0}", n as f64 / ring_secs);
    println!("ring_us_per_sign={:.2}", ring_secs * 1e6 / n as f64);
}

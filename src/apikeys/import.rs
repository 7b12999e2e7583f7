//! Bulk import of keys from another system, by the SHA-256 of their plaintext (what most systems
//! store): `POST /v1/admin/keys/import`. Each entry is checked as `POST /v1/keys` checks a new key
//! (errors name `keys[i].field`), then the whole batch is written in one transaction with one
//! multi-row INSERT. Only HMAC-SHA-256(current server key, SHA-256(plaintext)) is stored, as hash
//! version 2 ([`super::format::HASH_VERSION_IMPORTED`]); verification looks up both versions in
//! one statement. After commit every instance forgets the hashes it remembered as unknown, so a
//! key tried before its import verifies at once.

use std::{collections::HashMap, fmt};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    format::{self, Environment, START_LEN},
    import_store::{self, Row},
    limits::RateLimit,
    model::NewKey,
    service::ApiKeys,
    validate::{self, ValidKey},
};
use crate::{
    audit::{self, Actor},
    error::{Error, Result},
};

/// Most entries in one import call.
pub const MAX_IMPORT: usize = 1000;
/// Longest owner id, in bytes.
const MAX_OWNER: usize = 256;

/// The SHA-256 of a plaintext key, as sent: 64 hex characters or 43 base64url characters
/// (unpadded). `Debug` is redacted.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct KeyDigest(String);

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDigest([redacted])")
    }
}

impl KeyDigest {
    /// The 32 bytes, or `None` when it is neither 64 hex nor 43 base64url characters.
    pub fn bytes(&self) -> Option<[u8; 32]> {
        use base64::Engine as _;
        let s = self.0.as_str();
        let v = match s.len() {
            64 => hex::decode(s).ok()?,
            43 => base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?,
            _ => return None,
        };
        v.try_into().ok()
    }
}

/// One key to import (an entry of `keys`).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({
    "hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "owner": "checkout-service", "name": "migrated from legacy gateway",
    "scopes": ["payments:read"], "environment": "live", "start": "sk_live_4eC3",
    "metadata": {"legacy_id": "key_8812"}
}))]
#[serde(deny_unknown_fields)]
pub struct ImportKey {
    /// SHA-256 of the plaintext key: 64 hex characters or 43 base64url characters (no padding).
    #[schema(value_type = String)]
    pub hash: KeyDigest,
    /// Owner: a client id or a user id (it must exist and not be disabled or deleted).
    pub owner: String,
    /// Display name, 1 to 200 characters.
    pub name: String,
    /// Scopes, as for `POST /v1/keys`: never reserved, only those the owner's `key_scopes` allow.
    pub scopes: Vec<String>,
    /// `live` or `test`.
    pub environment: Environment,
    /// Expiry, RFC 3339, in the future and within ten years.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    /// Addresses the key may be used from (at most 20 CIDRs).
    pub allowed_cidrs: Option<Vec<String>>,
    /// Free-form JSON object, at most 4 KiB serialized.
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// What to show of the key (its first characters, at most 12); empty when not given.
    pub start: Option<String>,
    /// At most `limit` verifications in any `window` seconds.
    pub rate_limit: Option<RateLimit>,
    /// Starting credit balance (0 to 10^12).
    #[schema(minimum = 0, maximum = 1000000000000_i64)]
    pub credits: Option<i64>,
}

/// `POST /v1/admin/keys/import` body.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"keys": [{
    "hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "owner": "checkout-service", "name": "migrated from legacy gateway",
    "scopes": ["payments:read"], "environment": "live", "start": "sk_live_4eC3"
}]}))]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// 1 to 1 000 keys, imported all together or not at all.
    #[schema(value_type = Vec<ImportKey>)]
    pub keys: Vec<Value>,
}

/// One imported key, in input order.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01a1feff-a810-7c70-a12b-7a0646f92279", "owner": "checkout-service", "start": "sk_live_4eC3"}))]
pub struct ImportedKey {
    /// The new key id.
    pub id: Uuid,
    /// Owner.
    pub owner: String,
    /// What is shown of the key.
    pub start: String,
}

/// `POST /v1/admin/keys/import` answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"imported": 1, "keys": [
    {"id": "01a1feff-a810-7c70-a12b-7a0646f92279", "owner": "checkout-service", "start": "sk_live_4eC3"}
]}))]
pub struct Imported {
    /// How many keys were imported (all of them).
    pub imported: usize,
    /// The keys, in input order.
    pub keys: Vec<ImportedKey>,
}

/// `err` about entry `i`: its detail names `keys[i].field`.
fn at(i: usize, err: Error) -> Error {
    let p = |d: String| format!("keys[{i}].{d}");
    match err {
        Error::Invalid(d) => Error::Invalid(p(d)),
        Error::ScopeReserved(d) => Error::ScopeReserved(p(d)),
        Error::ScopeNotAllowed(d) => Error::ScopeNotAllowed(p(d)),
        Error::Forbidden(d) => Error::Forbidden(p(d)),
        Error::LimitExceeded(d) => Error::LimitExceeded(p(d)),
        Error::Conflict(d) => Error::Conflict(p(d)),
        other => other,
    }
}

/// A checked entry.
struct Entry {
    digest: [u8; 32],
    owner: String,
    start: String,
    key: ValidKey,
}

/// Checks entry `i` as `POST /v1/keys` checks a new key, plus its hash, owner and start.
fn entry(i: usize, raw: Value, now: OffsetDateTime) -> Result<Entry> {
    let e: ImportKey =
        serde_json::from_value(raw).map_err(|e| Error::invalid(format!("keys[{i}]: invalid entry: {e}")))?;
    let digest = e.hash.bytes().ok_or_else(|| {
        at(i, Error::invalid("hash: must be the SHA-256 of the key, 64 hex or 43 base64url characters"))
    })?;
    if e.owner.is_empty() || e.owner.len() > MAX_OWNER || e.owner.chars().any(char::is_control) {
        return Err(at(i, Error::invalid(format!("owner: must be a client id or user id (1 to {MAX_OWNER} bytes)"))));
    }
    let start = e.start.unwrap_or_default();
    if start.chars().count() > START_LEN || start.chars().any(char::is_control) {
        return Err(at(i, Error::invalid(format!("start: at most {START_LEN} characters, no control characters"))));
    }
    let body = NewKey {
        name: e.name,
        scopes: e.scopes,
        environment: e.environment,
        expires_in: None,
        expires_at: e.expires_at,
        allowed_cidrs: e.allowed_cidrs,
        metadata: e.metadata,
        rate_limit: e.rate_limit,
        credits: e.credits,
        refill: None,
    };
    let key = validate::new_key(body, now).map_err(|err| at(i, err))?;
    Ok(Entry { digest, owner: e.owner, start, key })
}

impl ApiKeys {
    /// Imports 1 to [`MAX_IMPORT`] keys by hash, all or none (see the module docs). Errors:
    /// [`Error::Invalid`] naming `keys` or `keys[i].field`; [`Error::ScopeNotAllowed`] (a scope
    /// outside the owner's `key_scopes`), [`Error::Forbidden`] (owner disabled or deleted) and
    /// [`Error::LimitExceeded`] (the owner's key cap) naming `keys[i]....`; [`Error::Conflict`]
    /// naming `keys[i].hash` for a hash already stored or repeated in the batch.
    pub async fn import(&self, raw: Vec<Value>, actor: &Actor) -> Result<Imported> {
        if raw.is_empty() || raw.len() > MAX_IMPORT {
            return Err(Error::invalid(format!("keys: 1 to {MAX_IMPORT} entries per call, got {}", raw.len())));
        }
        let now = self.clock.now();
        let entries: Vec<Entry> = raw.into_iter().enumerate().map(|(i, v)| entry(i, v, now)).collect::<Result<_>>()?;
        let mut first: HashMap<[u8; 32], usize> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if let Some(j) = first.insert(e.digest, i) {
                return Err(at(i, Error::Conflict(format!("hash: the same key as keys[{j}]"))));
            }
        }
        let current = self.hmac.current();
        let hashes: Vec<[u8; 32]> = entries.iter().map(|e| format::imported_hash(current.key(), &e.digest)).collect();
        // A key imported before a change of secret is stored under the previous key.
        let previous: Vec<[u8; 32]> = match self.hmac.previous() {
            Some(p) => entries.iter().map(|e| format::imported_hash(p.key(), &e.digest)).collect(),
            None => Vec::new(),
        };

        let mut tx = self.db.begin().await?;
        // Owners in a fixed order, so concurrent imports take their locks in the same order.
        let mut by_owner: Vec<(&str, Vec<usize>)> = Vec::new();
        {
            let mut index: HashMap<&str, usize> = HashMap::new();
            for (i, e) in entries.iter().enumerate() {
                let slot = *index.entry(&e.owner).or_insert_with(|| {
                    by_owner.push((&e.owner, Vec::new()));
                    by_owner.len() - 1
                });
                by_owner[slot].1.push(i);
            }
        }
        by_owner.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let max = i64::from(self.config.max_keys_per_owner);
        for (owner, idx) in &by_owner {
            let i = idx[0];
            let live = super::store::lock_and_count_live(&mut tx, owner, now, max).await?;
            let Some(policy) = import_store::owner_policy(&mut tx, owner).await? else {
                return Err(at(i, Error::invalid(format!("owner: {owner:?} is neither a client nor a user"))));
            };
            if policy.gone {
                return Err(at(i, Error::Forbidden("owner: the owner is disabled or deleted".into())));
            }
            for &k in idx {
                policy.check("scopes", &entries[k].key.scopes).map_err(|err| at(k, err))?;
            }
            if live + idx.len() as i64 > max {
                return Err(at(
                    i,
                    Error::LimitExceeded(format!(
                        "owner: {owner:?} has {live} live API keys; {} more would pass the limit of {max}",
                        idx.len()
                    )),
                ));
            }
        }
        if let Some(i) = import_store::first_present(&mut tx, &hashes, &previous).await? {
            return Err(at(i, Error::Conflict("hash: a key with this hash already exists".into())));
        }
        let rows: Vec<Row<'_>> = entries
            .iter()
            .zip(&hashes)
            .map(|(e, hash)| Row { id: Uuid::now_v7(), owner: &e.owner, start: &e.start, hash: *hash, key: &e.key })
            .collect();
        import_store::insert(&mut tx, &rows, current.id(), now).await?;
        let count = rows.len();
        let owners: Vec<&str> = by_owner.iter().map(|(o, _)| *o).collect();
        let details = json!({"count": count, "owners": owners});
        audit::record(&mut tx, now, actor, "api_key.import", "api_key", "import", details).await?;
        // Delivered on commit: every instance forgets the hashes it remembers as unknown.
        import_store::notify_added(&mut tx).await?;
        tx.commit().await?;
        self.cache.forget_missing();
        crate::metrics::keys_imported(count as u64);
        let keys = rows
            .into_iter()
            .map(|r| ImportedKey { id: r.id, owner: r.owner.to_owned(), start: r.start.to_owned() })
            .collect();
        Ok(Imported { imported: count, keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64url_digests_are_read_and_anything_else_refused() {
        let sha = format::sha256(b"sk_other_0123456789abcdef");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha);
        assert_eq!(KeyDigest(hex::encode(sha)).bytes(), Some(sha));
        assert_eq!(KeyDigest(hex::encode(sha).to_uppercase()).bytes(), Some(sha));
        assert_eq!(KeyDigest(b64).bytes(), Some(sha));
        assert_eq!(KeyDigest("zz".repeat(32)).bytes(), None);
        assert_eq!(KeyDigest("ab".repeat(31)).bytes(), None);
        assert!(!format!("{:?}", KeyDigest(hex::encode(sha))).contains(&hex::encode(sha)[..8]));
    }

    #[test]
    fn errors_name_the_entry() {
        let now = OffsetDateTime::now_utc();
        let ok = json!({"hash": "ab".repeat(32), "owner": "c", "name": "n", "scopes": ["read"], "environment": "live"});
        assert!(entry(0, ok.clone(), now).is_ok());
        let mut bad = ok.clone();
        bad["hash"] = json!("nope");
        assert!(entry(3, bad, now).err().map(|e| e.to_string()).unwrap_or_default().starts_with("keys[3].hash:"));
        let mut bad = ok.clone();
        bad["allowed_cidrs"] = json!(["300.0.0.0/8"]);
        assert!(entry(1, bad, now)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .starts_with("keys[1].allowed_cidrs:"));
        let mut bad = ok;
        bad["extra"] = json!(1);
        assert!(entry(2, bad, now).err().map(|e| e.to_string()).unwrap_or_default().starts_with("keys[2]:"));
    }
}

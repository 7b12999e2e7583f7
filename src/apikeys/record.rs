//! What verification knows about one key ([`KeyRecord`], what the cache holds) and the one query
//! that reads it: the key with its owner's policy and its limit group, in one statement.

use std::{
    collections::HashSet,
    net::IpAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use compact_str::CompactString;
use ipnet::IpNet;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    format::KeyHashes,
    limits::LimitsRow,
    policy::{OwnerPolicy, OWNER_COLUMNS, OWNER_JOIN},
    store::{bind_hashes, BY_EITHER_HASH, KEY_FROM},
    validate::parse_cidr,
};
use crate::error::Result;

/// What verification needs to know about one key: what the cache holds, a million of them in about
/// 300 MB (see [`super::cache`]). Kept small on purpose: the owner and the scope set are shared
/// between the keys that have the same ([`Interner`]); the name and the metadata's JSON are one
/// string, stored inline up to 24 bytes; the expiry is a number; what only some keys have (limits,
/// address restrictions) sits behind one optional pointer.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Key id.
    pub id: Uuid,
    /// Owner (shared with every cached key of the same owner).
    pub owner: Arc<str>,
    /// Effective scopes: the key's own scopes that its owner's `key_scopes` still allow, never a
    /// reserved one (see [`super::policy::OwnerPolicy::effective`]). What verification grants and
    /// shows. Shared with every cached key that has the same set.
    pub effective_scopes: Arc<[String]>,
    /// The name, then the metadata's JSON text (empty for `{}`).
    text: CompactString,
    /// Limits and address restrictions, for the keys that have any.
    extras: Option<Box<Extras>>,
    /// Expiry (a rotated key's grace end) in Unix microseconds; [`NEVER`] when it has none.
    expires_us: i64,
    name_len: u32,
    /// `live` or `test`; `None` for a stored value this version does not know.
    pub environment: Option<super::Environment>,
    /// Revoked.
    pub revoked: bool,
    /// Replaced by a rotation (and so within its grace while not expired).
    pub rotating: bool,
    /// `false` while disabled.
    pub enabled: bool,
    /// The owner was disabled (client) or deleted (user) when the record was read.
    pub owner_gone: bool,
    /// The last (hour, source address) whose sighting this instance handed to usage (see
    /// [`KeyRecord::first_sighting_this_hour`]); fits in the struct's padding.
    sighting: Sighting,
}

/// A hash of an hour and an address; 0 for none. Cloning copies the value.
#[derive(Debug, Default)]
struct Sighting(AtomicU32);

impl Clone for Sighting {
    fn clone(&self) -> Self {
        Self(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

/// What only some keys have.
#[derive(Debug, Clone)]
struct Extras {
    limit_group: Uuid,
    rate_limit: Option<crate::ratelimit::Rule>,
    metered: bool,
    allowed: Option<Box<[IpNet]>>,
}

/// [`KeyRecord`]'s expiry for a key that never expires.
const NEVER: i64 = i64::MAX;

/// The parts of a [`KeyRecord`] that are not shared or derived.
#[derive(Debug, Default)]
pub struct RecordParts {
    /// Key id.
    pub id: Uuid,
    /// Limit group.
    pub limit_group: Uuid,
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Effective scopes.
    pub effective_scopes: Vec<String>,
    /// Allowed networks (`None`: any address).
    pub allowed: Option<Vec<IpNet>>,
    /// Metadata.
    pub metadata: Value,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
    /// Rate limit.
    pub rate_limit: Option<crate::ratelimit::Rule>,
    /// Environment.
    pub environment: Option<super::Environment>,
    /// Revoked.
    pub revoked: bool,
    /// Rotated.
    pub rotating: bool,
    /// Enabled.
    pub enabled: bool,
    /// Owner disabled or deleted.
    pub owner_gone: bool,
    /// Has credits.
    pub metered: bool,
}

impl KeyRecord {
    /// A record of `parts`, sharing the owner and the scope set through `interner`.
    pub fn new(parts: RecordParts, interner: &Interner) -> Self {
        let mut text = CompactString::from(parts.name.as_str());
        let name_len = u32::try_from(text.len()).unwrap_or(u32::MAX);
        match &parts.metadata {
            Value::Null => {}
            Value::Object(m) if m.is_empty() => {}
            other => text.push_str(&other.to_string()),
        }
        let plain =
            parts.limit_group == parts.id && parts.rate_limit.is_none() && !parts.metered && parts.allowed.is_none();
        Self {
            id: parts.id,
            owner: interner.owner(&parts.owner),
            effective_scopes: interner.scopes(parts.effective_scopes),
            text,
            extras: (!plain).then(|| {
                Box::new(Extras {
                    limit_group: parts.limit_group,
                    rate_limit: parts.rate_limit,
                    metered: parts.metered,
                    allowed: parts.allowed.map(Vec::into_boxed_slice),
                })
            }),
            expires_us: parts
                .expires_at
                .map_or(NEVER, |t| i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(NEVER)),
            name_len,
            environment: parts.environment,
            revoked: parts.revoked,
            rotating: parts.rotating,
            enabled: parts.enabled,
            owner_gone: parts.owner_gone,
            sighting: Sighting::default(),
        }
    }

    /// Whether this is the first verification on this instance, in the hour `at` falls in, from
    /// `source` since a verification from another address (or since the record was cached); marks
    /// it so. Usage writes a key's `last_used_*` and its addresses' first and last sightings at most
    /// hourly, so a repeat needs no write, and with a million keys in use the write would cost
    /// Postgres an index probe per key per flush. A hash collision (one in four billion) or a
    /// race between two verifications only makes a write that was not needed, or skips one that
    /// Postgres would have refused for being within the hour.
    pub fn first_sighting_this_hour(&self, source: IpAddr, at: OffsetDateTime) -> bool {
        let address = match source {
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
            IpAddr::V6(v6) => v6.to_bits(),
        };
        let hour = at.unix_timestamp().div_euclid(3600) as u64;
        let mixed = ((address as u64) ^ ((address >> 64) as u64).rotate_left(29) ^ hour.rotate_left(47))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mark = ((mixed >> 32) as u32) | 1;
        // Read before writing: a hot key verified from one address on every core would otherwise
        // bounce its cache line between them on each verification.
        self.sighting.0.load(Ordering::Relaxed) != mark && self.sighting.0.swap(mark, Ordering::Relaxed) != mark
    }

    /// Forgets the sighting [`KeyRecord::first_sighting_this_hour`] last reported, so the next
    /// verification reports one again (usage could not keep it).
    pub fn forget_sighting(&self) {
        self.sighting.0.store(0, Ordering::Relaxed);
    }

    /// Its limit group (shared with its rotation predecessor or successor; its own id otherwise).
    pub fn limit_group(&self) -> Uuid {
        self.extras.as_ref().map_or(self.id, |e| e.limit_group)
    }

    /// Its group's rate limit.
    pub fn rate_limit(&self) -> Option<crate::ratelimit::Rule> {
        self.extras.as_ref().and_then(|e| e.rate_limit)
    }

    /// Whether its group has a credit balance (read from Postgres at each verification).
    pub fn metered(&self) -> bool {
        self.extras.as_ref().is_some_and(|e| e.metered)
    }

    /// Whether `ip` may use this key.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self.extras.as_ref().and_then(|e| e.allowed.as_ref()) {
            None => true,
            Some(nets) => nets.iter().any(|n| n.contains(&ip)),
        }
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        self.text.get(..self.name_len as usize).unwrap_or_default()
    }

    /// The metadata as JSON text (`{}` when empty).
    pub fn metadata_json(&self) -> &str {
        match self.text.get(self.name_len as usize..) {
            Some(json) if !json.is_empty() => json,
            _ => "{}",
        }
    }

    /// The expiry, if any.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        (self.expires_us != NEVER)
            .then(|| OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.expires_us) * 1000).ok())
            .flatten()
    }

    /// Whether the key has expired at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_us != NEVER && i128::from(self.expires_us) * 1000 <= now.unix_timestamp_nanos()
    }

    /// Bytes this record holds on the heap beyond its fixed size (for the cache's weigher).
    pub fn heap_bytes(&self) -> usize {
        let text = if self.text.is_heap_allocated() { self.text.len() } else { 0 };
        let extras = self.extras.as_ref().map_or(0, |e| {
            std::mem::size_of::<Extras>() + e.allowed.as_ref().map_or(0, |n| std::mem::size_of_val(&**n))
        });
        text + extras
    }
}

/// Shares owners and scope sets between cached records: a million keys of a hundred owners hold a
/// hundred owner strings, not a million. Entries nobody else holds any more are dropped as the sets
/// grow, so a long-running instance does not keep every owner it ever saw.
#[derive(Debug, Default)]
pub struct Interner {
    owners: Mutex<HashSet<Arc<str>>>,
    scopes: Mutex<HashSet<Arc<[String]>>>,
}

/// Set size below which an interner set is never swept.
const SWEEP_FLOOR: usize = 4096;

fn intern<T: ?Sized + Eq + std::hash::Hash>(
    set: &Mutex<HashSet<Arc<T>>>,
    value: &T,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    let mut set = set.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = set.get(value) {
        return Arc::clone(found);
    }
    // Sweep when the set has doubled since the last sweep left it (amortized O(1) per insert).
    if set.len() >= SWEEP_FLOOR && set.len().is_power_of_two() {
        set.retain(|a| Arc::strong_count(a) > 1);
    }
    let made = make();
    set.insert(Arc::clone(&made));
    made
}

impl Interner {
    /// The shared copy of `owner`.
    pub fn owner(&self, owner: &str) -> Arc<str> {
        intern(&self.owners, owner, || Arc::from(owner))
    }

    /// The shared copy of `scopes`.
    pub fn scopes(&self, scopes: Vec<String>) -> Arc<[String]> {
        intern(&self.scopes, scopes.as_slice(), || Arc::from(scopes.clone()))
    }
}

/// What verification reads of a key, with its owner's policy and its limit group.
#[derive(sqlx::FromRow)]
struct RecordRow {
    id: Uuid,
    owner: String,
    name: String,
    environment: String,
    scopes: Vec<String>,
    allowed_cidrs: Vec<String>,
    metadata: Value,
    expires_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    rotated_to: Option<Uuid>,
    enabled: bool,
    limit_group: Uuid,
    rate_limit: Option<i32>,
    rate_window: Option<i32>,
    metered: bool,
    key_scopes: Option<Vec<String>>,
    owner_gone: bool,
}

/// The key with keyed hash `hash` (version 1) or, imported by its SHA-256, `imported` (version 2),
/// as verification needs it, with its owner's policy and its limit group read in the same statement
/// (so the effective scopes, the owner's state and the limits are as current as the key). One
/// round trip: two probes of the `key_hash` index (a BitmapOr).
pub async fn find_by_hash(db: &PgPool, hashes: &KeyHashes, interner: &Interner) -> Result<Option<KeyRecord>> {
    let sql = format!(
        "SELECT k.id, k.owner, k.name, k.environment, k.scopes, k.allowed_cidrs, k.metadata, k.expires_at,
                k.revoked_at, k.rotated_to, k.enabled, COALESCE(k.limit_group, k.id) AS limit_group,
                l.rate_limit, l.rate_window, (l.credits IS NOT NULL) IS TRUE AS metered, {OWNER_COLUMNS}
         FROM {KEY_FROM} {OWNER_JOIN} WHERE {BY_EITHER_HASH}"
    );
    let row: Option<RecordRow> = bind_hashes(sqlx::query_as(&sql), hashes).fetch_optional(db).await?;
    Ok(row.map(|r| {
        let policy = OwnerPolicy { key_scopes: r.key_scopes, gone: r.owner_gone };
        let id = r.id;
        let allowed = (!r.allowed_cidrs.is_empty()).then(|| {
            r.allowed_cidrs
                .iter()
                .filter_map(|c| {
                    let net = parse_cidr(c).map(|n| n.trunc());
                    if net.is_none() {
                        tracing::warn!(key_id = %id, "unreadable stored CIDR ignored (it matches no address)");
                    }
                    net
                })
                .collect()
        });
        let limits = LimitsRow { rate_limit: r.rate_limit, rate_window: r.rate_window, ..Default::default() };
        KeyRecord::new(
            RecordParts {
                id,
                limit_group: r.limit_group,
                owner: r.owner,
                name: r.name,
                effective_scopes: policy.effective(&r.scopes),
                allowed,
                metadata: r.metadata,
                expires_at: r.expires_at,
                rate_limit: limits.rule(),
                environment: super::Environment::parse(&r.environment),
                revoked: r.revoked_at.is_some(),
                rotating: r.rotated_to.is_some(),
                enabled: r.enabled,
                owner_gone: policy.gone,
                metered: r.metered,
            },
            interner,
        )
    }))
}

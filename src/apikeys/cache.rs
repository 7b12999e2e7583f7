//! The verification cache: key records by keyed hash, so a repeated key costs no database round
//! trip. Bounded in size and time. Every change to a key (revocation, rotation, PATCH) makes every
//! instance [`KeyCache::forget`] it within a second through the change feed; the TTL only bounds
//! what a lost best-effort notification (a change that widens a key) can leave stale. Unknown hashes are
//! remembered separately, briefly and in a small cache, so a flood of random keys neither reaches
//! Postgres for every repeat nor pushes real keys out.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use moka::sync::Cache;
use serde_json::Value;
use uuid::Uuid;

/// Memory the record cache may use by default, in bytes (approximate, see [`approx_bytes`]): about
/// 50 000 typical keys. Bounding bytes rather than entries keeps a few keys with large metadata
/// from taking more than their share. `TESSERA_API_KEY_CACHE_MB` sets it.
pub const CAPACITY_BYTES: u64 = 48 * 1024 * 1024;
/// What the cache's own bookkeeping costs per entry (hash-table slot, access and write-order deque
/// nodes, timestamps, allocator slack). Measured with 100 000 seeded keys verified at random:
/// resident memory grew ~1 KiB per cached key of ~250 bytes of its own.
const ENTRY_OVERHEAD: usize = 700;
/// How long a record is trusted before it is read again.
pub const TTL: Duration = Duration::from_secs(30);
/// Unknown hashes kept by default.
pub const NEGATIVE_CAPACITY: u64 = 10_000;
/// How long an unknown hash is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

pub use super::record::KeyRecord;

/// What the cache knows about a hash.
#[derive(Debug)]
pub enum Cached {
    /// A key.
    Key(Arc<KeyRecord>),
    /// Recently looked up and not found.
    Missing,
    /// Nothing: ask Postgres.
    Unknown,
}

/// API-key verification cache, one per instance.
pub struct KeyCache {
    by_hash: Cache<[u8; 32], Arc<KeyRecord>>,
    missing: Cache<[u8; 32], ()>,
    /// Bumped by every `forget`, so a lookup that raced a revocation does not cache what it read.
    generation: AtomicU64,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::with_budget(CAPACITY_BYTES)
    }
}

/// Approximate memory of one cached record, bookkeeping included.
pub fn approx_bytes(rec: &KeyRecord) -> u32 {
    let metadata = match &rec.metadata {
        Value::Object(m) if m.is_empty() => 0,
        // A parsed JSON tree takes a few times its text.
        other => other.to_string().len() * 3,
    };
    let bytes = std::mem::size_of::<KeyRecord>()
        + ENTRY_OVERHEAD
        + rec.owner.len()
        + rec.name.len()
        + rec.effective_scopes.iter().map(|s| s.len() + std::mem::size_of::<String>()).sum::<usize>()
        + std::mem::size_of_val(&*rec.allowed)
        + metadata;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl KeyCache {
    /// The service's cache: records weighing at most `capacity_bytes`, the default TTLs and
    /// negative capacity (`TESSERA_API_KEY_CACHE_MB` sets the budget).
    pub fn with_budget(capacity_bytes: u64) -> Self {
        Self::new(capacity_bytes, TTL, NEGATIVE_CAPACITY, NEGATIVE_TTL)
    }

    /// A cache of records weighing at most `capacity_bytes` (by [`approx_bytes`]) for `ttl`, and
    /// `negative_capacity` unknown hashes for `negative_ttl`.
    pub fn new(capacity_bytes: u64, ttl: Duration, negative_capacity: u64, negative_ttl: Duration) -> Self {
        Self {
            by_hash: Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_, rec: &Arc<KeyRecord>| approx_bytes(rec))
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
            missing: Cache::builder().max_capacity(negative_capacity).time_to_live(negative_ttl).build(),
            generation: AtomicU64::new(0),
        }
    }

    /// What is cached for `hash`.
    pub fn get(&self, hash: &[u8; 32]) -> Cached {
        if let Some(rec) = self.by_hash.get(hash) {
            return Cached::Key(rec);
        }
        if self.missing.contains_key(hash) {
            return Cached::Missing;
        }
        Cached::Unknown
    }

    /// A token to take before reading Postgres and hand back to [`KeyCache::fill`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches what Postgres said about `hash`, read after `generation` was taken.
    pub fn fill(&self, hash: [u8; 32], found: Option<Arc<KeyRecord>>, generation: u64) {
        match found {
            Some(rec) => {
                self.by_hash.insert(hash, rec);
                // A forget that ran while we read may predate our insert; then the row we read may
                // be stale, so drop it rather than serve it for a whole TTL.
                if self.generation() != generation {
                    self.by_hash.invalidate(&hash);
                }
            }
            None => self.missing.insert(hash, ()),
        }
    }

    /// Forgets a key at once: the next verification on this instance reads Postgres.
    pub fn forget(&self, id: &Uuid) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let id = *id;
        if let Err(e) = self.by_hash.invalidate_entries_if(move |_, rec| rec.id == id) {
            // Cannot happen (the cache is built with invalidation closures); clearing is the safe fallback.
            tracing::warn!(error = %e, "api-key cache predicate refused; clearing the cache");
            self.by_hash.invalidate_all();
        }
    }

    /// Forgets every key of `owner` at once (their owner was disabled or deleted).
    pub fn forget_owner(&self, owner: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let owner = owner.to_owned();
        if let Err(e) = self.by_hash.invalidate_entries_if(move |_, rec| rec.owner == owner) {
            tracing::warn!(error = %e, "api-key cache predicate refused; clearing the cache");
            self.by_hash.invalidate_all();
        }
    }

    /// Forgets every key (after a gap in change notifications).
    pub fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate_all();
    }

    /// Forgets every hash remembered as unknown (keys were imported: one of them may be among them).
    pub fn forget_missing(&self) {
        self.missing.invalidate_all();
    }

    /// Records cached (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.by_hash.entry_count()
    }

    /// Whether no record is cached (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: Uuid) -> Arc<KeyRecord> {
        Arc::new(KeyRecord {
            id,
            owner: "o".into(),
            name: "n".into(),
            environment: "live",
            effective_scopes: Box::default(),
            owner_gone: false,
            restricted: false,
            allowed: Box::default(),
            metadata: Value::Null,
            expires_at: None,
            revoked_at: None,
            rotated_to: None,
            enabled: true,
            limit_group: id,
            rate_limit: None,
            metered: false,
        })
    }

    #[test]
    fn forget_drops_the_record_of_that_id_only() {
        let c = KeyCache::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        c.fill([1; 32], Some(record(a)), c.generation());
        c.fill([2; 32], Some(record(b)), c.generation());
        c.forget(&a);
        assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
        assert!(matches!(c.get(&[2; 32]), Cached::Key(r) if r.id == b));
    }

    #[test]
    fn the_record_cache_holds_its_byte_budget_and_weighs_metadata() {
        let per_record = u64::from(approx_bytes(&record(Uuid::nil())));
        let c = KeyCache::new(per_record * 100, TTL, NEGATIVE_CAPACITY, NEGATIVE_TTL);
        for i in 0..1_000u32 {
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&i.to_be_bytes());
            c.fill(hash, Some(record(Uuid::now_v7())), c.generation());
        }
        c.by_hash.run_pending_tasks();
        assert!(c.by_hash.weighted_size() <= per_record * 100, "{}", c.by_hash.weighted_size());
        assert!(c.len() <= 100 && !c.is_empty(), "{}", c.len());
        let mut heavy = (*record(Uuid::nil())).clone();
        heavy.metadata = serde_json::json!({"blob": "x".repeat(3000)});
        assert!(approx_bytes(&heavy) > approx_bytes(&record(Uuid::nil())) + 9000);
    }

    #[test]
    fn a_fill_that_raced_a_forget_is_not_kept() {
        let c = KeyCache::default();
        let id = Uuid::now_v7();
        let g = c.generation();
        c.forget(&id);
        c.fill([1; 32], Some(record(id)), g);
        assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
    }

    #[test]
    fn forget_owner_drops_that_owners_records_only() {
        let c = KeyCache::default();
        let mut other = (*record(Uuid::now_v7())).clone();
        other.owner = "p".into();
        c.fill([1; 32], Some(record(Uuid::now_v7())), c.generation());
        c.fill([2; 32], Some(Arc::new(other)), c.generation());
        c.forget_owner("o");
        assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
        assert!(matches!(c.get(&[2; 32]), Cached::Key(r) if r.owner == "p"));
    }

    #[test]
    fn unknown_hashes_are_remembered() {
        let c = KeyCache::default();
        c.fill([3; 32], None, c.generation());
        assert!(matches!(c.get(&[3; 32]), Cached::Missing));
    }

    #[test]
    fn an_unrestricted_key_allows_any_address_and_a_restricted_one_only_its_networks() {
        let mut r = (*record(Uuid::now_v7())).clone();
        assert!(r.allows("198.51.100.1".parse().unwrap()));
        r.restricted = true;
        r.allowed = vec!["203.0.113.0/24".parse().unwrap()].into();
        assert!(r.allows("203.0.113.9".parse().unwrap()));
        assert!(!r.allows("198.51.100.1".parse().unwrap()));
    }
}

//! The verification cache: key records by keyed hash, so a repeated key costs no database round
//! trip, and hashes recently found to be no key, so a repeated unknown key costs none either.
//!
//! **Sizing.** Records are weighed in bytes ([`approx_bytes`]: what a record and its slot really
//! take, about 220 bytes for a key without metadata) against `TESSERA_API_KEY_CACHE_MB`; a million
//! keys fit in about 220 MB (215 bytes a key measured resident). Past the budget the cache evicts
//! (quick_cache's S3-FIFO-like policy, which keeps keys seen more than once over a scan of keys
//! seen once) and a verification of an evicted key reads Postgres again: still correct, one
//! indexed query.
//!
//! **Freshness.** Every change to a key (revocation, rotation, PATCH) makes every instance
//! [`KeyCache::forget`] it within a second through the change feed, and a gap in that feed drops
//! everything ([`KeyCache::forget_all`]), so the TTL (`TESSERA_API_KEY_CACHE_TTL`) is a backstop,
//! not what keeps answers right. Forgetting is lazy and O(1): a forgotten id (or owner) is noted
//! with the generation at which it was forgotten, and a record filled before that generation is
//! treated as absent; the notes are kept for one TTL, after which no record older than them remains.
//!
//! **Unknown keys** are remembered for [`NEGATIVE_TTL`] in a separate, bounded cache, so a flood of
//! random keys neither reaches Postgres for every repeat nor pushes real keys out. Concurrent misses
//! of the same hash wait for one read ([`KeyCache::load`]), so Postgres sees a hash at most once per
//! [`NEGATIVE_TTL`] while the negative cache holds it.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, PoisonError, RwLock,
    },
    time::{Duration, Instant},
};

use quick_cache::{sync::Cache, Weighter};
use uuid::Uuid;

pub use super::record::{Interner, KeyRecord};

/// Default memory for records, in bytes (`TESSERA_API_KEY_CACHE_MB`): about 600 000 keys.
pub const CAPACITY_BYTES: u64 = 128 * 1024 * 1024;
/// What one cached record costs besides what [`KeyRecord::heap_bytes`] counts, in bytes: the record
/// in its `Arc` allocation (128 with glibc's rounding), the cache slot (hash, pointer, stamps,
/// eviction state: ~70) and the index (~10). Checked against resident memory by the test
/// `resident_memory_per_key` and by `scripts/bench` (`cache_bytes_per_key`).
const ENTRY_OVERHEAD: usize = 220;
/// Default time a record is trusted without a change notification (`TESSERA_API_KEY_CACHE_TTL`).
pub const TTL: Duration = Duration::from_secs(600);
/// Unknown hashes kept (about 60 bytes each).
pub const NEGATIVE_CAPACITY: usize = 200_000;
/// How long an unknown hash is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(120);
/// Independent locks for concurrent misses: two misses of the same hash share one, so the second
/// waits for the first's answer instead of asking Postgres again.
const FLIGHT_LOCKS: usize = 1024;

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

#[derive(Clone)]
struct Entry {
    record: Arc<KeyRecord>,
    /// The generation taken before the read that produced it.
    generation: u64,
    /// Seconds since the cache's epoch when it was read.
    read_at: u32,
}

#[derive(Clone, Copy)]
struct Absent {
    generation: u64,
    read_at: u32,
}

#[derive(Clone)]
struct Weigh;

impl Weighter<[u8; 32], Entry> for Weigh {
    fn weight(&self, _: &[u8; 32], e: &Entry) -> u64 {
        u64::from(approx_bytes(&e.record))
    }
}

/// Approximate memory of one cached record, bookkeeping included, in bytes.
pub fn approx_bytes(rec: &KeyRecord) -> u32 {
    u32::try_from(ENTRY_OVERHEAD + rec.heap_bytes()).unwrap_or(u32::MAX)
}

/// Ids and owners forgotten recently, with the generation at which they were.
#[derive(Default)]
struct Forgotten {
    ids: HashMap<Uuid, (u64, Instant)>,
    owners: HashMap<Arc<str>, (u64, Instant)>,
    /// When the notes were last swept.
    swept: Option<Instant>,
}

/// Least time between two sweeps of the notes: a burst of forgets (an owner's 100 000 keys
/// revoked) must not sweep once per key.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// API-key verification cache, one per instance.
pub struct KeyCache {
    records: Cache<[u8; 32], Entry, Weigh>,
    missing: Cache<[u8; 32], Absent>,
    interner: Interner,
    forgotten: RwLock<Forgotten>,
    /// Entries in `forgotten`, read without its lock on every hit.
    forgotten_len: AtomicUsize,
    /// Bumped by every forget; a record read before a forget of its id is not served.
    generation: AtomicU64,
    /// Records read before this generation are all stale (`forget_all`).
    all_forgotten: AtomicU64,
    /// Unknown hashes remembered before this generation are stale (`forget_missing`).
    missing_forgotten: AtomicU64,
    flights: Box<[tokio::sync::Mutex<()>]>,
    epoch: Instant,
    ttl: Duration,
}

impl Default for KeyCache {
    fn default() -> Self {
        Self::new(CAPACITY_BYTES, TTL, NEGATIVE_CAPACITY)
    }
}

impl KeyCache {
    /// A cache of records weighing at most `capacity_bytes` (by [`approx_bytes`]), each trusted
    /// for `ttl` without a notification, and of `negative_capacity` unknown hashes.
    pub fn new(capacity_bytes: u64, ttl: Duration, negative_capacity: usize) -> Self {
        let estimated = usize::try_from(capacity_bytes / (ENTRY_OVERHEAD as u64 + 16)).unwrap_or(usize::MAX);
        Self {
            // Sized for the budget's worth of typical records; the slab grows only as keys arrive.
            records: Cache::with_weighter(estimated.clamp(1024, 8_000_000), capacity_bytes.max(1), Weigh),
            missing: Cache::new(negative_capacity.max(16)),
            interner: Interner::default(),
            forgotten: RwLock::default(),
            forgotten_len: AtomicUsize::new(0),
            generation: AtomicU64::new(1),
            all_forgotten: AtomicU64::new(0),
            missing_forgotten: AtomicU64::new(0),
            flights: (0..FLIGHT_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            epoch: Instant::now(),
            ttl,
        }
    }

    fn now_secs(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    /// The interner records read for this cache share their owners and scope sets through.
    pub fn interner(&self) -> &Interner {
        &self.interner
    }

    /// What is cached for `hash`.
    pub fn get(&self, hash: &[u8; 32]) -> Cached {
        let now = self.now_secs();
        if let Some(e) = self.records.get(hash) {
            if self.fresh(&e, now) {
                return Cached::Key(e.record);
            }
        }
        if let Some(a) = self.missing.get(hash) {
            if now.saturating_sub(a.read_at) < NEGATIVE_TTL.as_secs() as u32
                && a.generation >= self.missing_forgotten.load(Ordering::Acquire)
            {
                return Cached::Missing;
            }
        }
        Cached::Unknown
    }

    fn fresh(&self, e: &Entry, now: u32) -> bool {
        if u64::from(now.saturating_sub(e.read_at)) >= self.ttl.as_secs()
            || e.generation < self.all_forgotten.load(Ordering::Acquire)
        {
            return false;
        }
        if self.forgotten_len.load(Ordering::Acquire) == 0 {
            return true;
        }
        let f = self.forgotten.read().unwrap_or_else(PoisonError::into_inner);
        let after = |noted: Option<&(u64, Instant)>| noted.is_some_and(|(g, _)| *g > e.generation);
        !(after(f.ids.get(&e.record.id)) || after(f.owners.get(&e.record.owner)))
    }

    /// What is known of `hash`, reading it with `read` on a miss. Concurrent misses of the same
    /// hash wait for one read. Returns the record (or `None`) and whether `read` ran.
    pub async fn load<F, Fut, E>(&self, hash: [u8; 32], read: F) -> Result<(Option<Arc<KeyRecord>>, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<KeyRecord>, E>>,
    {
        let lock = &self.flights[usize::from(hash[0]) << 2 | usize::from(hash[1] & 3)];
        let _turn = lock.lock().await;
        match self.get(&hash) {
            Cached::Key(rec) => return Ok((Some(rec), false)),
            Cached::Missing => return Ok((None, false)),
            Cached::Unknown => {}
        }
        let generation = self.generation.load(Ordering::Acquire);
        let found = read().await?.map(Arc::new);
        let read_at = self.now_secs();
        match &found {
            Some(record) => self.records.insert(hash, Entry { record: Arc::clone(record), generation, read_at }),
            None => self.missing.insert(hash, Absent { generation, read_at }),
        }
        Ok((found, true))
    }

    /// Forgets so far (every kind): a test can tell whether anything was dropped in between.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn note(&self, update: impl FnOnce(&mut Forgotten, u64, Instant)) {
        let mut f = self.forgotten.write().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        // Notes older than a TTL cover no record any more: every record they could hide has
        // expired. Kept a little longer they hide only expired records, so sweeping now and then
        // is enough.
        if f.swept.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            let ttl = self.ttl;
            f.ids.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            f.owners.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            f.swept = Some(now);
        }
        update(&mut f, self.bump(), now);
        self.forgotten_len.store(f.ids.len() + f.owners.len(), Ordering::Release);
    }

    /// Forgets a key at once: the next verification of it on this instance reads Postgres.
    pub fn forget(&self, id: &Uuid) {
        self.note(|f, g, now| {
            f.ids.insert(*id, (g, now));
        });
    }

    /// Forgets every key of `owner` at once (their owner was disabled or deleted).
    pub fn forget_owner(&self, owner: &str) {
        self.note(|f, g, now| {
            f.owners.insert(Arc::from(owner), (g, now));
        });
    }

    /// Forgets every key (after a gap in change notifications).
    pub fn forget_all(&self) {
        let g = self.bump();
        self.all_forgotten.fetch_max(g, Ordering::AcqRel);
        self.records.clear();
    }

    /// Forgets every unknown hash (keys were added by import, whose hashes may have been tried).
    pub fn forget_missing(&self) {
        let g = self.bump();
        self.missing_forgotten.fetch_max(g, Ordering::AcqRel);
        self.missing.clear();
    }

    /// Records cached (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.records.len() as u64
    }

    /// Whether no record is cached (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;

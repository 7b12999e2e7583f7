//! Usage counted in memory on the verification path, per minute, and handed to the flusher in
//! batches. Counts for known keys are exact; what is kept per source address (unknown keys) and per
//! key and address is capped, because those maps grow with input an attacker chooses.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    sync::{Mutex, MutexGuard},
};

use time::OffsetDateTime;
use uuid::Uuid;

/// Most (source, minute) entries kept between flushes for unknown and malformed keys.
pub const MAX_SOURCES: usize = 50_000;
/// Most (key, address) entries kept between flushes.
pub const MAX_KEY_ADDRESSES: usize = 100_000;

/// Valid and refused verifications in one bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Valid verifications.
    pub valid: u64,
    /// Refusals by code.
    pub denied: BTreeMap<&'static str, u64>,
    /// The latest verification counted here, and its source (known keys only).
    pub last: Option<(OffsetDateTime, IpAddr)>,
}

impl Counts {
    fn add(&mut self, denied: Option<&'static str>, n: u64) {
        match denied {
            None => self.valid += n,
            Some(code) => *self.denied.entry(code).or_default() += n,
        }
    }

    fn merge(&mut self, other: Counts) {
        self.valid += other.valid;
        for (code, n) in other.denied {
            *self.denied.entry(code).or_default() += n;
        }
        if let Some((at, ip)) = other.last {
            self.saw(at, ip);
        }
    }

    fn saw(&mut self, at: OffsetDateTime, source: IpAddr) {
        if self.last.is_none_or(|(last, _)| at >= last) {
            self.last = Some((at, source));
        }
    }

    /// Refusals of every code.
    pub fn denied_total(&self) -> u64 {
        self.denied.values().sum()
    }
}

/// First and last time an address presented a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// First time in the batch.
    pub first: OffsetDateTime,
    /// Last time in the batch.
    pub last: OffsetDateTime,
}

impl Seen {
    fn widen(&mut self, other: Seen) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// The maps' hasher: seeded per process (the address maps take input an attacker chooses, and
/// are capped besides) and several times cheaper than SipHash on these small keys.
type Hasher = foldhash::fast::RandomState;

/// Everything counted since the last flush.
#[derive(Debug, Default)]
pub struct Batch {
    /// Per key and minute (unix seconds of the minute's start).
    pub keys: HashMap<(Uuid, i64), Counts, Hasher>,
    /// Per key and source address.
    pub addresses: HashMap<(Uuid, IpAddr), Seen, Hasher>,
    /// Which addresses used each key in each minute (unix seconds of the minute's start).
    pub address_minutes: HashSet<(Uuid, IpAddr, i64), Hasher>,
    /// Last verification of each key: when and from where.
    pub last_used: HashMap<Uuid, (OffsetDateTime, IpAddr), Hasher>,
    /// Unknown and malformed keys per source address and minute.
    pub sources: HashMap<(IpAddr, i64), Counts, Hasher>,
    /// Entries not kept because a cap was reached.
    pub dropped: u64,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.addresses.is_empty()
            && self.address_minutes.is_empty()
            && self.last_used.is_empty()
            && self.sources.is_empty()
    }

    /// Verifications in this batch (for logs and tests).
    pub fn verifications(&self) -> u64 {
        self.keys.values().chain(self.sources.values()).map(|c| c.valid + c.denied_total()).sum()
    }

    fn merge(&mut self, other: Batch) {
        for (k, c) in other.keys {
            self.keys.entry(k).or_default().merge(c);
        }
        for (k, s) in other.addresses {
            self.addresses.entry(k).and_modify(|mine| mine.widen(s)).or_insert(s);
        }
        self.address_minutes.extend(other.address_minutes);
        for (k, (at, ip)) in other.last_used {
            let mine = self.last_used.entry(k).or_insert((at, ip));
            if at > mine.0 {
                *mine = (at, ip);
            }
        }
        for (k, c) in other.sources {
            self.sources.entry(k).or_default().merge(c);
        }
        self.dropped += other.dropped;
    }
}

/// The minute `at` falls in, as unix seconds.
pub fn minute_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(60) * 60
}

/// In-memory usage counters, one per instance.
#[derive(Debug)]
pub struct UsageRecorder {
    pending: Mutex<Batch>,
    enabled: bool,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        Self::new(true)
    }
}

impl UsageRecorder {
    /// A recorder; when not `enabled` it counts nothing (`TESSERA_USAGE_COUNTING=false`).
    pub fn new(enabled: bool) -> Self {
        Self { pending: Mutex::default(), enabled }
    }

    fn lock(&self) -> MutexGuard<'_, Batch> {
        // A panic elsewhere cannot leave counters half-updated in a way worth refusing to count.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one verification of a known key from `source`: valid when `denied` is `None`.
    /// `sighting`: whether the key's last use and `source`'s sighting of it are to be written too;
    /// they are kept to the hour, and the caller knows when this instance has already sent them
    /// within it (`KeyRecord::first_sighting_this_hour`). Counts, the minute's addresses and the
    /// minute's latest use are kept either way.
    pub fn record_key(
        &self,
        key: Uuid,
        denied: Option<&'static str>,
        source: IpAddr,
        at: OffsetDateTime,
        sighting: bool,
    ) {
        if !self.enabled {
            return;
        }
        let mut b = self.lock();
        let counts = b.keys.entry((key, minute_of(at))).or_default();
        counts.add(denied, 1);
        counts.saw(at, source);
        let slot = (key, source, minute_of(at));
        if b.address_minutes.len() < MAX_KEY_ADDRESSES {
            b.address_minutes.insert(slot);
        } else if !b.address_minutes.contains(&slot) {
            b.dropped += 1;
        }
        if !sighting {
            return;
        }
        let seen = Seen { first: at, last: at };
        let cap_reached = b.addresses.len() >= MAX_KEY_ADDRESSES;
        match b.addresses.get_mut(&(key, source)) {
            Some(s) => s.widen(seen),
            None if cap_reached => b.dropped += 1,
            None => {
                b.addresses.insert((key, source), seen);
            }
        }
        let last = b.last_used.entry(key).or_insert((at, source));
        if at >= last.0 {
            *last = (at, source);
        }
    }

    /// Counts one refusal of an unknown or malformed key from `source`.
    pub fn record_unknown(&self, source: IpAddr, code: &'static str, at: OffsetDateTime) {
        if !self.enabled {
            return;
        }
        let mut b = self.lock();
        let slot = (source, minute_of(at));
        let cap_reached = b.sources.len() >= MAX_SOURCES;
        match b.sources.get_mut(&slot) {
            Some(c) => c.add(Some(code), 1),
            None if cap_reached => b.dropped += 1,
            None => b.sources.entry(slot).or_default().add(Some(code), 1),
        }
    }

    /// Takes everything counted so far.
    pub fn take(&self) -> Batch {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back a batch that could not be written, so nothing is lost.
    pub fn restore(&self, batch: Batch) {
        self.lock().merge(batch);
    }

    /// Verifications counted and not yet flushed (for tests and diagnostics).
    pub fn pending_verifications(&self) -> u64 {
        self.lock().verifications()
    }

    /// Whether anything waits to be flushed.
    pub fn has_pending(&self) -> bool {
        !self.lock().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn counts_are_per_key_and_minute_with_refusals_by_code() {
        let r = UsageRecorder::default();
        let k = Uuid::now_v7();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        r.record_key(k, None, ip, t(0), true);
        r.record_key(k, None, ip, t(1), true);
        r.record_key(k, Some("EXPIRED"), ip, t(2), true);
        r.record_key(k, None, ip, t(120), true);
        let b = r.take();
        assert_eq!(b.keys.len(), 2);
        let first = &b.keys[&(k, minute_of(t(0)))];
        assert_eq!(first.valid, 2);
        assert_eq!(first.denied.get("EXPIRED"), Some(&1));
        assert_eq!(first.last, Some((t(2), ip)));
        assert_eq!(b.addresses[&(k, ip)], Seen { first: t(0), last: t(120) });
        assert_eq!(b.last_used[&k], (t(120), ip));
        assert!(r.take().is_empty());
    }

    #[test]
    fn a_repeat_sighting_counts_and_keeps_the_minute_address_without_the_hourly_writes() {
        let r = UsageRecorder::default();
        let k = Uuid::now_v7();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        r.record_key(k, None, ip, t(0), false);
        let b = r.take();
        assert_eq!(b.keys[&(k, minute_of(t(0)))].valid, 1);
        assert_eq!(b.keys[&(k, minute_of(t(0)))].last, Some((t(0), ip)));
        assert!(b.address_minutes.contains(&(k, ip, minute_of(t(0)))));
        assert!(b.addresses.is_empty() && b.last_used.is_empty());
    }

    #[test]
    fn sources_are_capped_but_existing_ones_keep_counting() {
        let r = UsageRecorder::default();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            r.record_unknown(IpAddr::from(i.to_be_bytes()), "NOT_FOUND", t(0));
        }
        r.record_unknown(IpAddr::from(0u32.to_be_bytes()), "MALFORMED", t(0));
        let b = r.take();
        assert_eq!(b.sources.len(), MAX_SOURCES);
        assert_eq!(b.dropped, 10);
        assert_eq!(b.sources[&(IpAddr::from(0u32.to_be_bytes()), minute_of(t(0)))].denied_total(), 2);
    }

    #[test]
    fn a_restored_batch_adds_to_what_came_in_meanwhile() {
        let r = UsageRecorder::default();
        let k = Uuid::now_v7();
        let ip: IpAddr = "::1".parse().unwrap();
        r.record_key(k, None, ip, t(0), true);
        let failed = r.take();
        r.record_key(k, Some("REVOKED"), ip, t(1), true);
        r.restore(failed);
        let b = r.take();
        let c = &b.keys[&(k, minute_of(t(0)))];
        assert_eq!((c.valid, c.denied_total()), (1, 1));
        assert_eq!(b.last_used[&k].0, t(1));
    }
}

//! Usage counted in memory on the verification path, per minute, and handed to the flusher in
//! batches. Counts for known keys are exact; what is kept per source address (unknown keys), per
//! key and address, and per key and minute of addresses is capped, because those grow with input
//! an attacker chooses.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Mutex, MutexGuard},
};

use time::OffsetDateTime;
use uuid::Uuid;

/// Most (source, minute) entries kept between flushes for unknown and malformed keys.
pub const MAX_SOURCES: usize = 50_000;
/// Most (key, address) entries kept between flushes.
pub const MAX_KEY_ADDRESSES: usize = 100_000;
/// Most distinct addresses kept for one key in one minute (a key presented from more addresses
/// still has every use counted).
pub const MAX_ADDRESSES_PER_MINUTE: usize = 16;

/// Valid and refused verifications in one bucket.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Valid verifications.
    pub valid: u64,
    /// Refusals by code.
    pub denied: BTreeMap<&'static str, u64>,
    /// The latest verification counted here, and its source (known keys only).
    pub last: Option<(OffsetDateTime, IpAddr)>,
    /// The distinct addresses counted here, in order of first use (known keys only; at most
    /// [`MAX_ADDRESSES_PER_MINUTE`]). Kept with the counts, so every row written has its own.
    pub ips: Vec<IpAddr>,
}

impl Counts {
    fn add(&mut self, denied: Option<&'static str>, n: u64) {
        match denied {
            None => self.valid += n,
            Some(code) => *self.denied.entry(code).or_default() += n,
        }
    }

    /// Merges `other` in; returns the addresses dropped at the cap.
    fn merge(&mut self, other: Counts) -> u64 {
        self.valid += other.valid;
        for (code, n) in other.denied {
            *self.denied.entry(code).or_default() += n;
        }
        if let Some((at, ip)) = other.last {
            self.saw(at, ip);
        }
        other.ips.into_iter().map(|ip| u64::from(!self.saw_address(ip))).sum()
    }

    /// Adds `ip` to the addresses unless it is there; false when it was not there and the cap
    /// left no room.
    fn saw_address(&mut self, ip: IpAddr) -> bool {
        if self.ips.contains(&ip) {
            return true;
        }
        if self.ips.len() >= MAX_ADDRESSES_PER_MINUTE {
            return false;
        }
        self.ips.push(ip);
        true
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
        self.keys.is_empty() && self.addresses.is_empty() && self.last_used.is_empty() && self.sources.is_empty()
    }

    /// Verifications in this batch (for logs and tests).
    pub fn verifications(&self) -> u64 {
        self.keys.values().chain(self.sources.values()).map(|c| c.valid + c.denied_total()).sum()
    }

    fn merge(&mut self, other: Batch) {
        for (k, c) in other.keys {
            self.dropped += self.keys.entry(k).or_default().merge(c);
        }
        for (k, s) in other.addresses {
            self.addresses.entry(k).and_modify(|mine| mine.widen(s)).or_insert(s);
        }
        for (k, (at, ip)) in other.last_used {
            let mine = self.last_used.entry(k).or_insert((at, ip));
            if at > mine.0 {
                *mine = (at, ip);
            }
        }
        for (k, c) in other.sources {
            self.dropped += self.sources.entry(k).or_default().merge(c);
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
    ///
    /// Returns false when a sighting was asked for and not kept ([`MAX_KEY_ADDRESSES`] reached):
    /// the caller then forgets that it sent it, so a later verification sends it again.
    pub fn record_key(
        &self,
        key: Uuid,
        denied: Option<&'static str>,
        source: IpAddr,
        at: OffsetDateTime,
        sighting: bool,
    ) -> bool {
        if !self.enabled {
            return true;
        }
        let mut b = self.lock();
        let counts = b.keys.entry((key, minute_of(at))).or_default();
        counts.add(denied, 1);
        counts.saw(at, source);
        if !counts.saw_address(source) {
            b.dropped += 1;
        }
        if !sighting {
            return true;
        }
        let seen = Seen { first: at, last: at };
        let cap_reached = b.addresses.len() >= MAX_KEY_ADDRESSES;
        match b.addresses.get_mut(&(key, source)) {
            Some(s) => s.widen(seen),
            None if cap_reached => {
                b.dropped += 1;
                return false;
            }
            None => {
                b.addresses.insert((key, source), seen);
            }
        }
        let last = b.last_used.entry(key).or_insert((at, source));
        if at >= last.0 {
            *last = (at, source);
        }
        true
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
        assert_eq!(b.keys[&(k, minute_of(t(0)))].ips, vec![ip]);
        assert!(b.addresses.is_empty() && b.last_used.is_empty());
    }

    #[test]
    fn every_key_minute_keeps_its_own_addresses_however_many_keys_are_counted() {
        // More key-minutes than any cap: each still has the address it was used from (a row
        // without one failed the whole flush, again at every retry).
        let r = UsageRecorder::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let keys: Vec<Uuid> = (0..MAX_KEY_ADDRESSES + 10).map(|_| Uuid::now_v7()).collect();
        for k in &keys {
            r.record_key(*k, None, ip, t(0), false);
        }
        let b = r.take();
        assert_eq!(b.keys.len(), keys.len());
        assert!(b.keys.values().all(|c| c.ips == [ip]));
        assert_eq!(b.dropped, 0);
    }

    #[test]
    fn a_key_minute_keeps_a_bounded_number_of_addresses_and_counts_every_use() {
        let r = UsageRecorder::default();
        let k = Uuid::now_v7();
        for i in 0..(MAX_ADDRESSES_PER_MINUTE as u32 + 4) {
            let ip = IpAddr::from((0xc633_6400 + i).to_be_bytes());
            r.record_key(k, None, ip, t(0), false);
            r.record_key(k, None, ip, t(1), false);
        }
        let b = r.take();
        let c = &b.keys[&(k, minute_of(t(0)))];
        assert_eq!(c.valid, 2 * (MAX_ADDRESSES_PER_MINUTE as u64 + 4));
        assert_eq!(c.ips.len(), MAX_ADDRESSES_PER_MINUTE);
        assert_eq!(b.dropped, 8, "the four addresses past the cap, twice each");
    }

    #[test]
    fn a_sighting_past_the_cap_is_reported_as_not_kept() {
        let r = UsageRecorder::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_KEY_ADDRESSES {
            assert!(r.record_key(Uuid::now_v7(), None, ip, t(0), true));
        }
        let late = Uuid::now_v7();
        assert!(!r.record_key(late, None, ip, t(1), true), "the caller must send it again later");
        assert!(r.record_key(late, None, ip, t(2), false), "no sighting asked: nothing to report");
        let b = r.take();
        assert_eq!(b.keys[&(late, minute_of(t(0)))].valid, 2, "counted all the same");
        assert!(!b.last_used.contains_key(&late));
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

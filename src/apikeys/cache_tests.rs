use std::convert::Infallible;

use serde_json::json;

use super::*;
use crate::apikeys::record::RecordParts;

fn parts(id: Uuid, owner: &str) -> RecordParts {
    RecordParts { id, limit_group: id, owner: owner.into(), name: "n".into(), enabled: true, ..Default::default() }
}

async fn fill(c: &KeyCache, hash: [u8; 32], found: Option<RecordParts>) -> bool {
    let rec = found.map(|p| KeyRecord::new(p, c.interner()));
    c.load(hash, || async { Ok::<_, Infallible>(rec) }).await.map(|(_, read)| read).unwrap_or(false)
}

#[tokio::test]
async fn forget_drops_the_record_of_that_id_only() {
    let c = KeyCache::default();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    fill(&c, [1; 32], Some(parts(a, "o"))).await;
    fill(&c, [2; 32], Some(parts(b, "o"))).await;
    c.forget(&a);
    assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
    assert!(matches!(c.get(&[2; 32]), Cached::Key(r) if r.id == b));
    // Read again after the forget, it is served again.
    assert!(fill(&c, [1; 32], Some(parts(a, "o"))).await);
    assert!(matches!(c.get(&[1; 32]), Cached::Key(r) if r.id == a));
}

#[tokio::test]
async fn the_record_cache_holds_its_byte_budget_and_weighs_metadata() {
    let light = KeyRecord::new(parts(Uuid::nil(), "o"), &Interner::default());
    let per_record = u64::from(approx_bytes(&light));
    let c = KeyCache::new(per_record * 100, TTL, NEGATIVE_CAPACITY);
    for i in 0..1_000u32 {
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&i.to_be_bytes());
        fill(&c, hash, Some(parts(Uuid::now_v7(), "o"))).await;
    }
    assert!(c.records.weight() <= per_record * 100, "{}", c.records.weight());
    assert!(c.len() <= 100 && !c.is_empty(), "{}", c.len());
    let mut heavy = parts(Uuid::nil(), "o");
    heavy.metadata = json!({"blob": "x".repeat(3000)});
    assert!(approx_bytes(&KeyRecord::new(heavy, &Interner::default())) > approx_bytes(&light) + 3000);
}

#[tokio::test]
async fn a_read_that_raced_a_forget_is_not_served() {
    let c = KeyCache::default();
    let id = Uuid::now_v7();
    let rec = KeyRecord::new(parts(id, "o"), c.interner());
    // The forget lands while the read is in flight (after the generation was taken).
    let (found, read) = c
        .load([1; 32], || async {
            c.forget(&id);
            Ok::<_, Infallible>(Some(rec))
        })
        .await
        .unwrap();
    assert!(read && found.is_some());
    assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
}

#[tokio::test]
async fn forget_owner_and_forget_all() {
    let c = KeyCache::default();
    fill(&c, [1; 32], Some(parts(Uuid::now_v7(), "o"))).await;
    fill(&c, [2; 32], Some(parts(Uuid::now_v7(), "p"))).await;
    c.forget_owner("o");
    assert!(matches!(c.get(&[1; 32]), Cached::Unknown));
    assert!(matches!(c.get(&[2; 32]), Cached::Key(r) if &*r.owner == "p"));
    c.forget_all();
    assert!(matches!(c.get(&[2; 32]), Cached::Unknown));
    assert!(fill(&c, [2; 32], Some(parts(Uuid::now_v7(), "p"))).await);
    assert!(matches!(c.get(&[2; 32]), Cached::Key(_)));
}

#[tokio::test]
async fn unknown_hashes_are_remembered_until_keys_are_imported() {
    let c = KeyCache::default();
    assert!(fill(&c, [3; 32], None).await);
    assert!(matches!(c.get(&[3; 32]), Cached::Missing));
    // A second miss does not read.
    assert!(!fill(&c, [3; 32], None).await);
    c.forget_missing();
    assert!(matches!(c.get(&[3; 32]), Cached::Unknown));
}

#[tokio::test]
async fn concurrent_misses_of_one_hash_read_once() {
    let c = Arc::new(KeyCache::default());
    let reads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (c, reads) = (Arc::clone(&c), Arc::clone(&reads));
            tokio::spawn(async move {
                c.load([9; 32], || async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<_, Infallible>(None)
                })
                .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await, Ok(Ok((None, _)))));
    }
    assert_eq!(reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn owners_and_scope_sets_are_shared() {
    let c = KeyCache::default();
    let mut a = parts(Uuid::now_v7(), "owner-1");
    a.effective_scopes = vec!["a:read".into()];
    let mut b = parts(Uuid::now_v7(), "owner-1");
    b.effective_scopes = vec!["a:read".into()];
    let (a, b) = (KeyRecord::new(a, c.interner()), KeyRecord::new(b, c.interner()));
    assert!(Arc::ptr_eq(&a.owner, &b.owner));
    assert!(Arc::ptr_eq(&a.effective_scopes, &b.effective_scopes));
}

#[test]
fn name_metadata_and_expiry_round_trip() {
    let mut p = parts(Uuid::now_v7(), "o");
    p.name = "checkout".into();
    p.metadata = json!({"team": "payments"});
    let t = time::macros::datetime!(2027-01-02 03:04:05.123456 UTC);
    p.expires_at = Some(t);
    let r = KeyRecord::new(p, &Interner::default());
    assert_eq!(r.name(), "checkout");
    assert_eq!(r.metadata_json(), r#"{"team":"payments"}"#);
    assert_eq!(r.expires_at(), Some(t));
    assert!(r.expired_at(t) && !r.expired_at(t - time::Duration::MICROSECOND));
    let empty = KeyRecord::new(parts(Uuid::now_v7(), "o"), &Interner::default());
    assert_eq!((empty.name(), empty.metadata_json(), empty.expires_at()), ("n", "{}", None));
}

#[test]
fn an_unrestricted_key_allows_any_address_and_a_restricted_one_only_its_networks() {
    let mut p = parts(Uuid::now_v7(), "o");
    assert!(KeyRecord::new(parts(Uuid::now_v7(), "o"), &Interner::default()).allows("198.51.100.1".parse().unwrap()));
    p.allowed = Some(vec!["203.0.113.0/24".parse().unwrap()]);
    let r = KeyRecord::new(p, &Interner::default());
    assert!(r.allows("203.0.113.9".parse().unwrap()));
    assert!(!r.allows("198.51.100.1".parse().unwrap()));
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Resident memory per cached key of the benchmark's shape (a 16-byte name, no metadata, one
/// scope, a hundred owners). Ignored by default: it reads this process's RSS, which other tests
/// running at the same time would disturb. Run alone with
/// `cargo test --lib resident_memory_per_key -- --ignored`.
#[tokio::test]
#[ignore = "measures the process's resident memory; run alone"]
async fn resident_memory_per_key() {
    const N: u32 = 500_000;
    let c = KeyCache::new(1 << 30, TTL, NEGATIVE_CAPACITY);
    let owners: Vec<String> = (0..100).map(|i| format!("bench-owner-{i}")).collect();
    let before = resident_bytes();
    for i in 0..N {
        let mut p = parts(Uuid::now_v7(), &owners[i as usize % 100]);
        p.name = format!("bench key {i:06}");
        p.effective_scopes = vec!["bench:read".into()];
        p.environment = Some(crate::apikeys::Environment::Live);
        let mut hash = [0u8; 32];
        hash[..4].copy_from_slice(&i.to_le_bytes());
        hash[4..8].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
        fill(&c, hash, Some(p)).await;
    }
    let per_key = (resident_bytes() - before) / u64::from(N);
    println!("resident memory per cached key: {per_key} bytes ({} records)", c.len());
    assert_eq!(c.len(), u64::from(N));
    assert!(per_key <= 300, "{per_key} bytes a key");
}

#[test]
fn a_sighting_is_first_once_per_hour_and_address_and_after_another_address() {
    let rec = KeyRecord::new(parts(Uuid::now_v7(), "o"), &Interner::default());
    let at =
        |secs: i64| time::OffsetDateTime::from_unix_timestamp(1_700_000_000 - 1_700_000_000 % 3600 + secs).unwrap();
    let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("203.0.113.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
    assert!(rec.first_sighting_this_hour(a, at(0)));
    assert!(!rec.first_sighting_this_hour(a, at(10)));
    assert!(!rec.first_sighting_this_hour(a, at(3599)), "same hour, same address");
    assert!(rec.first_sighting_this_hour(a, at(3600)), "a new hour");
    assert!(rec.first_sighting_this_hour(b, at(3601)), "a new address");
    assert!(!rec.first_sighting_this_hour(b, at(3602)));
    assert!(rec.first_sighting_this_hour(a, at(3603)), "back to the first address");
    // A clone (what the cache hands out is shared, but a copied record starts from the same mark).
    assert!(!rec.clone().first_sighting_this_hour(a, at(3604)));
}

use bytes::Bytes;
use nusa_tensor::{DataType, Tensor, TensorData};

use super::*;
use crate::codec;

fn record(n: usize, expires_at: u64) -> Record {
    let t = Tensor {
        name: "y".into(),
        datatype: DataType::Uint8,
        shape: vec![n as i64],
        data: TensorData::from(Bytes::from(vec![1u8; n])),
    };
    codec::encode(expires_at, &[t]).unwrap()
}

fn key(i: u32) -> CacheKey {
    let mut k = [0; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    CacheKey::from_bytes(k)
}

#[test]
fn weighted_size_stays_within_the_byte_budget() {
    let metrics = CacheMetrics::detached();
    let capacity = 64 * 1024;
    let tier = MemoryTier::new(capacity, metrics.clone());
    for i in 0..2_000 {
        tier.insert(key(i), record(1000, u64::MAX), 0);
        // Reads build the frequency sketch that admission consults.
        let _ = tier.get(&key(i % 10), 0);
    }
    tier.run_pending_tasks();
    assert!(tier.weighted_size() <= capacity, "{}", tier.weighted_size());
    assert!(tier.weighted_size() > 0);
    assert!(metrics.evictions(Tier::Memory) > 0);
    assert_eq!(metrics.bytes(Tier::Memory), tier.weighted_size() as i64);
}

#[test]
fn an_entry_is_weighed_with_its_overhead() {
    let tier = MemoryTier::new(1 << 20, CacheMetrics::detached());
    let r = record(1000, u64::MAX);
    let len = r.bytes.len() as u64;
    tier.insert(key(1), r, 0);
    tier.run_pending_tasks();
    assert_eq!(tier.weighted_size(), len + ENTRY_OVERHEAD);
}

#[test]
fn expiry_follows_the_cache_clock() {
    let tier = MemoryTier::new(1 << 20, CacheMetrics::detached());
    tier.insert(key(1), record(10, 1_000), 400);
    assert!(tier.get(&key(1), 999).is_some());
    assert!(tier.get(&key(1), 1_000).is_none());
    // Dropped on that read: earlier clocks do not bring it back.
    assert!(tier.get(&key(1), 500).is_none());
    // Already expired when offered: not kept at all.
    tier.insert(key(2), record(10, 1_000), 1_000);
    assert!(tier.get(&key(2), 0).is_none());
}

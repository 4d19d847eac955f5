//! The memory tier: moka, bounded in bytes, W-TinyLFU admission.

use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::policy::Expiry;

use crate::codec::Record;
use crate::metrics::{CacheMetrics, Tier};
use crate::CacheKey;

#[cfg(test)]
mod tests;

/// Charged per entry on top of its record, for moka's node, the key and the
/// `Tensor` structs; keeps a flood of tiny answers from outgrowing the budget.
pub(crate) const ENTRY_OVERHEAD: u64 = 256;

#[derive(Clone)]
pub(crate) struct MemoryEntry {
    pub record: Record,
    /// Real time left at insertion, only for moka's own expiry, which runs on
    /// the monotonic clock and frees memory. Whether an entry is still fresh
    /// is decided by `record.expires_at` against the cache's clock.
    ttl_left: Duration,
}

pub(crate) struct MemoryTier {
    cache: moka::sync::Cache<CacheKey, MemoryEntry>,
    metrics: CacheMetrics,
}

impl MemoryTier {
    pub fn new(capacity_bytes: u64, metrics: CacheMetrics) -> MemoryTier {
        let listener_metrics = metrics.clone();
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_k, v: &MemoryEntry| {
                u32::try_from(v.record.bytes.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(TtlLeft)
            .eviction_listener(move |_k, _v, cause: RemovalCause| {
                if cause.was_evicted() {
                    listener_metrics.evicted(Tier::Memory, 1);
                }
            })
            .build();
        MemoryTier { cache, metrics }
    }

    /// A fresh entry, or `None`; an expired one is dropped on the way.
    pub fn get(&self, key: &CacheKey, now: u64) -> Option<Record> {
        let entry = self.cache.get(key)?;
        if entry.record.expires_at <= now {
            self.cache.invalidate(key);
            return None;
        }
        Some(entry.record)
    }

    pub fn insert(&self, key: CacheKey, record: Record, now: u64) {
        let ttl_left = Duration::from_millis(record.expires_at.saturating_sub(now));
        if ttl_left.is_zero() {
            return;
        }
        self.cache.insert(key, MemoryEntry { record, ttl_left });
        self.metrics
            .set_bytes(Tier::Memory, self.cache.weighted_size());
    }

    /// Runs moka's pending admissions and evictions now (tests, metrics).
    pub fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
        self.metrics
            .set_bytes(Tier::Memory, self.cache.weighted_size());
    }

    /// Drops every entry (an operator's purge).
    pub fn clear(&self) {
        self.cache.invalidate_all();
        self.run_pending_tasks();
    }

    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }
}

struct TtlLeft;

impl Expiry<CacheKey, MemoryEntry> for TtlLeft {
    fn expire_after_create(&self, _: &CacheKey, v: &MemoryEntry, _: Instant) -> Option<Duration> {
        Some(v.ttl_left)
    }

    // A replaced value brings its own expiry; moka's default keeps the old one.
    fn expire_after_update(
        &self,
        _: &CacheKey,
        v: &MemoryEntry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.ttl_left)
    }
}

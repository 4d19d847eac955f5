//! The cache's Prometheus families, registered in the gateway's one registry.

use nusa_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Where an answer was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    Memory,
    Disk,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelTierLabels {
    model: String,
    tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabels {
    tier: &'static str,
}

/// Handles to the cache's families; clones record into the same series.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    hits: Family<ModelTierLabels, Counter>,
    misses: Family<ModelLabels, Counter>,
    coalesced: Family<ModelLabels, Counter>,
    evictions: Family<TierLabels, Counter>,
    bytes: Family<TierLabels, Gauge>,
    disk_writes_dropped: Counter,
    disk_write_errors: Counter,
}

impl CacheMetrics {
    /// Registers the families in `metrics`' registry (they appear as
    /// `nusa_cache_hits_total` and so on). Call once per registry.
    pub fn new(metrics: &Metrics) -> CacheMetrics {
        let m = CacheMetrics::default();
        // The per-tier series exist from the start, at zero, so that
        // dashboards see them before the first eviction.
        for tier in [Tier::Memory, Tier::Disk] {
            let _ = m.evictions.get_or_create(&tier_labels(tier));
            let _ = m.bytes.get_or_create(&tier_labels(tier));
        }
        metrics.register_with(|r| {
            r.register(
                "cache_hits",
                "Answers served from the response cache, by model and tier (memory, disk)",
                m.hits.clone(),
            );
            r.register(
                "cache_misses",
                "Cacheable requests whose answer had to be computed, by model",
                m.misses.clone(),
            );
            r.register(
                "cache_coalesced",
                "Requests that waited for an identical request's computation instead of running their own, by model",
                m.coalesced.clone(),
            );
            r.register(
                "cache_evictions",
                "Entries evicted for space or expiry, by tier",
                m.evictions.clone(),
            );
            r.register(
                "cache_bytes",
                "Bytes held by each cache tier (memory: entries plus a fixed overhead each; disk: stored records)",
                m.bytes.clone(),
            );
            r.register(
                "cache_disk_writes_dropped",
                "Answers not written to the disk tier because its write queue was full",
                m.disk_writes_dropped.clone(),
            );
            r.register(
                "cache_disk_write_errors",
                "Answers not written to the disk tier because the write failed (disk full, I/O error); they stay in memory only",
                m.disk_write_errors.clone(),
            );
        });
        m
    }

    /// Handles registered nowhere, for tests and tools.
    pub fn detached() -> CacheMetrics {
        CacheMetrics::default()
    }

    pub fn hits(&self, model: &str, tier: Tier) -> u64 {
        self.hits
            .get_or_create(&ModelTierLabels {
                model: model.to_string(),
                tier: tier.as_str(),
            })
            .get()
    }

    pub fn misses(&self, model: &str) -> u64 {
        self.misses.get_or_create(&model_labels(model)).get()
    }

    pub fn coalesced(&self, model: &str) -> u64 {
        self.coalesced.get_or_create(&model_labels(model)).get()
    }

    pub fn evictions(&self, tier: Tier) -> u64 {
        self.evictions.get_or_create(&tier_labels(tier)).get()
    }

    pub fn bytes(&self, tier: Tier) -> i64 {
        self.bytes.get_or_create(&tier_labels(tier)).get()
    }

    pub fn disk_writes_dropped(&self) -> u64 {
        self.disk_writes_dropped.get()
    }

    pub fn disk_write_errors(&self) -> u64 {
        self.disk_write_errors.get()
    }

    pub(crate) fn hit(&self, model: &str, tier: Tier) {
        self.hits
            .get_or_create(&ModelTierLabels {
                model: model.to_string(),
                tier: tier.as_str(),
            })
            .inc();
    }

    pub(crate) fn miss(&self, model: &str) {
        self.misses.get_or_create(&model_labels(model)).inc();
    }

    pub(crate) fn coalesce(&self, model: &str) {
        self.coalesced.get_or_create(&model_labels(model)).inc();
    }

    pub(crate) fn evicted(&self, tier: Tier, n: u64) {
        self.evictions.get_or_create(&tier_labels(tier)).inc_by(n);
    }

    pub(crate) fn set_bytes(&self, tier: Tier, bytes: u64) {
        self.bytes
            .get_or_create(&tier_labels(tier))
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn disk_write_dropped(&self) {
        self.disk_writes_dropped.inc();
    }

    pub(crate) fn disk_write_failed(&self, answers: u64) {
        self.disk_write_errors.inc_by(answers);
    }
}

fn model_labels(model: &str) -> ModelLabels {
    ModelLabels {
        model: model.to_string(),
    }
}

fn tier_labels(tier: Tier) -> TierLabels {
    TierLabels {
        tier: tier.as_str(),
    }
}

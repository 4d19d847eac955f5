//! The spill decision's and the regions' metrics.

use std::time::Duration;

use nusa_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpillLabels {
    model: String,
    region: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    model: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    region: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    region: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeFailureLabels {
    region: String,
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WaitLabels {
    model: String,
    kind: &'static str,
}

fn wait_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

#[derive(Clone)]
pub struct DispatchMetrics {
    spilled: Family<SpillLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    breaker: Family<RegionLabels, Gauge>,
    rtt: Family<RegionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    probe_up: Family<RegionLabels, Gauge>,
    probe_failures: Family<ProbeFailureLabels, Counter>,
    region_requests: Family<OutcomeLabels, Counter>,
    wait: Family<WaitLabels, Histogram, fn() -> Histogram>,
}

impl DispatchMetrics {
    pub fn new(metrics: &Metrics) -> DispatchMetrics {
        let m = DispatchMetrics::detached();
        metrics.register_with(|r| {
            r.register("spilled", "Requests sent to a region, by model, region and reason (slo, queue_full, retry)", m.spilled.clone());
            r.register(
                "spill_rejected",
                "Requests answered 503 by the spill decision, by model and reason (slo: pinned here and late; queue_full)",
                m.rejected.clone(),
            );
            r.register("region_breaker_state", "Circuit breaker per region: 0 closed, 1 half-open, 2 open", m.breaker.clone());
            r.register("region_probe_rtt_seconds", "Round trip of the last health probe per region", m.rtt.clone());
            r.register("region_probe_up", "1 when the last health probe of the region passed, 0 when it failed", m.probe_up.clone());
            r.register(
                "region_probe_failures",
                "Failed health probes per region and class (connect, tls, timeout, reset, protocol, status_5xx, status_4xx, bad_answer, too_large)",
                m.probe_failures.clone(),
            );
            r.register("region_requests", "Requests to regions by outcome", m.region_requests.clone());
            r.register(
                "wait_seconds",
                "Local wait of requests served here: kind=predicted by the spill decision, kind=measured (queue + compute)",
                m.wait.clone(),
            );
        });
        m
    }

    pub fn detached() -> DispatchMetrics {
        DispatchMetrics {
            spilled: Family::default(),
            rejected: Family::default(),
            breaker: Family::default(),
            rtt: Family::default(),
            probe_up: Family::default(),
            probe_failures: Family::default(),
            region_requests: Family::default(),
            wait: Family::new_with_constructor(wait_buckets),
        }
    }

    /// A health probe's outcome: `None` passed, else the failure's class.
    pub fn probe(&self, region: &str, failure: Option<&'static str>) {
        self.probe_up
            .get_or_create(&RegionLabels {
                region: region.into(),
            })
            .set(i64::from(failure.is_none()));
        if let Some(class) = failure {
            self.probe_failures
                .get_or_create(&ProbeFailureLabels {
                    region: region.into(),
                    class,
                })
                .inc();
        }
    }

    pub fn spilled(&self, model: &str, region: &str, reason: &str) {
        self.spilled
            .get_or_create(&SpillLabels {
                model: model.into(),
                region: region.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn rejected(&self, model: &str, reason: &str) {
        self.rejected
            .get_or_create(&RejectLabels {
                model: model.into(),
                reason: reason.into(),
            })
            .inc();
    }

    pub fn breaker(&self, region: &str, code: i64) {
        self.breaker
            .get_or_create(&RegionLabels {
                region: region.into(),
            })
            .set(code);
    }

    pub fn rtt(&self, region: &str, rtt: Duration) {
        self.rtt
            .get_or_create(&RegionLabels {
                region: region.into(),
            })
            .set(rtt.as_secs_f64());
    }

    pub fn region_outcome(&self, region: &str, outcome: &str) {
        self.region_requests
            .get_or_create(&OutcomeLabels {
                region: region.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn wait(&self, model: &str, predicted: Duration, measured: Duration) {
        for (kind, d) in [("predicted", predicted), ("measured", measured)] {
            self.wait
                .get_or_create(&WaitLabels {
                    model: model.into(),
                    kind,
                })
                .observe(d.as_secs_f64());
        }
    }
}

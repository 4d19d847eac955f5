//! The rollouts' metrics: per model and version (only models in a rollout
//! have series), the step, and how rollouts ended.

use nusa_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
    arm: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComputeLabels {
    model: String,
    version: String,
    arm: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    model: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    model: String,
    version: String,
    result: &'static str,
}

fn compute_buckets() -> Histogram {
    // 50us .. ~26s, doubling (as the request histograms).
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

#[derive(Clone)]
pub(crate) struct CanaryMetrics {
    requests: Family<VersionLabels, Counter>,
    compute: Family<ComputeLabels, Histogram, fn() -> Histogram>,
    step: Family<ModelLabels, Gauge>,
    ended: Family<EndLabels, Counter>,
    shadow: Family<ShadowLabels, Counter>,
}

impl CanaryMetrics {
    pub(crate) fn new(metrics: &Metrics) -> CanaryMetrics {
        let m = CanaryMetrics {
            requests: Family::default(),
            compute: Family::new_with_constructor(compute_buckets),
            step: Family::default(),
            ended: Family::default(),
            shadow: Family::default(),
        };
        metrics.register_with(|r| {
            r.register(
                "rollout_requests",
                "Requests of models in a canary rollout, by version, arm (stable, candidate) and outcome (ok, error: 5xx or engine failure)",
                m.requests.clone(),
            );
            r.register(
                "rollout_compute_seconds",
                "Local compute time of requests of models in a canary rollout, by version and arm",
                m.compute.clone(),
            );
            r.register(
                "rollout_step_percent",
                "Share of requests the candidate gets now, per model in a rollout (0 once it ended)",
                m.step.clone(),
            );
            r.register(
                "rollouts_ended",
                "Canary rollouts ended, by model and result (promoted, rolled_back, aborted)",
                m.ended.clone(),
            );
            r.register(
                "rollout_shadow_comparisons",
                "Shadow comparisons of a candidate with the stable answers, by result (agree, disagree)",
                m.shadow.clone(),
            );
        });
        m
    }

    pub(crate) fn request(
        &self,
        model: &str,
        version: u64,
        arm: &'static str,
        error: bool,
        compute_us: Option<u64>,
    ) {
        self.requests
            .get_or_create(&VersionLabels {
                model: model.to_string(),
                version: version.to_string(),
                arm,
                outcome: if error { "error" } else { "ok" },
            })
            .inc();
        if let Some(us) = compute_us {
            self.compute
                .get_or_create(&ComputeLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    arm,
                })
                .observe(us as f64 / 1e6);
        }
    }

    pub(crate) fn shadow(&self, model: &str, version: u64, agree: bool) {
        self.shadow
            .get_or_create(&ShadowLabels {
                model: model.to_string(),
                version: version.to_string(),
                result: if agree { "agree" } else { "disagree" },
            })
            .inc();
    }

    pub(crate) fn step(&self, model: &str, percent: u32) {
        self.step
            .get_or_create(&ModelLabels {
                model: model.to_string(),
            })
            .set(i64::from(percent));
    }

    pub(crate) fn ended(&self, model: &str, result: &'static str) {
        self.ended
            .get_or_create(&EndLabels {
                model: model.to_string(),
                result,
            })
            .inc();
    }
}

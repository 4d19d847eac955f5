//! The `nusa_model_drift_*` families.

use std::sync::atomic::AtomicU64;

use nusa_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::core::Report;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TensorLabels {
    model: String,
    version: String,
    tensor: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    model: String,
    version: String,
}

pub(crate) struct DriftMetrics {
    psi: Family<TensorLabels, Gauge<f64, AtomicU64>>,
    drifted: Family<TensorLabels, Gauge>,
    samples: Family<VersionLabels, Counter>,
    dropped: Counter,
}

impl DriftMetrics {
    pub(crate) fn new(metrics: &Metrics) -> DriftMetrics {
        let m = DriftMetrics {
            psi: Family::default(),
            drifted: Family::default(),
            samples: Family::default(),
            dropped: Counter::default(),
        };
        metrics.register_with(|r| {
            r.register(
                "model_drift_psi",
                "Population stability index of the last judged window against the version's baseline, per tensor and kind (input, output, argmax: the classes a classifier picks); < 0.1 no shift, 0.1-0.25 moderate, > 0.25 significant",
                m.psi.clone(),
            );
            r.register(
                "model_drift_drifted",
                "1 when the last judged window's PSI is above drift.threshold, else 0, per tensor and kind",
                m.drifted.clone(),
            );
            r.register(
                "model_drift_samples",
                "Sampled requests summarized for drift, per model version",
                m.samples.clone(),
            );
            r.register(
                "model_drift_samples_dropped",
                "Sampled requests not summarized because the drift queue was full",
                m.dropped.clone(),
            );
        });
        m
    }

    pub(crate) fn sample(&self, model: &str, version: u64) {
        self.samples
            .get_or_create(&VersionLabels {
                model: model.to_string(),
                version: version.to_string(),
            })
            .inc();
    }

    pub(crate) fn dropped(&self) {
        self.dropped.inc();
    }

    /// After a window closed: the judged tensors' gauges.
    pub(crate) fn window(&self, r: &Report) {
        let version = r.version.to_string();
        for t in &r.tensors {
            let Some(psi) = t.psi else { continue };
            let labels = TensorLabels {
                model: r.model.clone(),
                version: version.clone(),
                tensor: t.name.clone(),
                kind: t.kind.as_str(),
            };
            self.psi.get_or_create(&labels).set(psi);
            self.drifted
                .get_or_create(&labels)
                .set(i64::from(t.drifted));
        }
    }

    /// A version no longer watched loses its series.
    pub(crate) fn forget(&self, r: &Report) {
        let version = r.version.to_string();
        for t in &r.tensors {
            let labels = TensorLabels {
                model: r.model.clone(),
                version: version.clone(),
                tensor: t.name.clone(),
                kind: t.kind.as_str(),
            };
            self.psi.remove(&labels);
            self.drifted.remove(&labels);
        }
        self.samples.remove(&VersionLabels {
            model: r.model.clone(),
            version,
        });
    }
}

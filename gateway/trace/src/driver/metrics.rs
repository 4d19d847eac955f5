//! `nusa_trace_*`: what became of the spans. One set per process (the
//! tracer is the process's), registered into each `Metrics` that asks.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::core::Verdict;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

/// Why spans were lost.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lost {
    /// Evicted from the buffer of traces waiting for their root.
    BufferFull,
    /// The export queue was full (the collector is slow or down).
    QueueFull,
    /// The collector refused them or did not answer in time.
    ExportFailed,
}

impl Lost {
    const ALL: [Lost; 3] = [Lost::BufferFull, Lost::QueueFull, Lost::ExportFailed];

    fn label(self) -> &'static str {
        match self {
            Lost::BufferFull => "buffer_full",
            Lost::QueueFull => "queue_full",
            Lost::ExportFailed => "export_failed",
        }
    }
}

struct Counters {
    dropped: Family<ReasonLabels, Counter>,
    exported: Counter,
    traces: Family<VerdictLabels, Counter>,
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(|| Counters {
    dropped: Family::default(),
    exported: Counter::default(),
    traces: Family::default(),
});

pub(crate) fn lost(why: Lost, spans: usize) {
    if spans > 0 {
        COUNTERS
            .dropped
            .get_or_create(&ReasonLabels {
                reason: why.label(),
            })
            .inc_by(spans as u64);
    }
}

pub(crate) fn exported(spans: usize) {
    COUNTERS.exported.inc_by(spans as u64);
}

pub(crate) fn decided(verdict: Verdict) {
    COUNTERS
        .traces
        .get_or_create(&VerdictLabels {
            verdict: verdict.label(),
        })
        .inc();
}

/// Adds the `nusa_trace_*` families to `metrics` (every series at 0 from
/// the start, so that a rate over a drop reason exists before the first drop).
pub fn register_metrics(metrics: &nusa_telemetry::Metrics) {
    let c = &*COUNTERS;
    for why in Lost::ALL {
        let _ = c.dropped.get_or_create(&ReasonLabels {
            reason: why.label(),
        });
    }
    for v in [
        Verdict::Sampled,
        Verdict::Slow,
        Verdict::Failed,
        Verdict::Dropped,
    ] {
        let _ = c
            .traces
            .get_or_create(&VerdictLabels { verdict: v.label() });
    }
    metrics.register_with(|r| {
        r.register(
            "trace_spans_dropped",
            "Spans of kept traces that never reached the collector, by reason (buffer_full: evicted while their trace was unfinished; queue_full: the export queue was full; export_failed: the collector refused them or timed out)",
            c.dropped.clone(),
        );
        r.register(
            "trace_spans_exported",
            "Spans the collector accepted",
            c.exported.clone(),
        );
        r.register(
            "trace_traces",
            "Finished request traces by the tail decision (sampled: by ratio or the caller's flag; slow: over the model's slo_ms; failed: answered 5xx; dropped: not exported)",
            c.traces.clone(),
        );
    });
}

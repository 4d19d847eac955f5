//! Sampling in the OpenTelemetry SDK: every span is recorded, the head
//! decision only sets the sampled flag (which a region call passes on),
//! and the tail processor decides at the end of each request's root
//! span whether its trace is exported.

use std::fmt;
use std::time::Duration;

use opentelemetry::trace::{Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SamplingDecision, SamplingResult, ShouldSample, Span, SpanData, SpanProcessor,
};
use parking_lot::Mutex;

use super::export::Queue;
use super::metrics::{self, Lost};
use crate::core::{self, Outcome, Parent, Pending};

/// The root span's attributes the tail decision reads.
pub(crate) const STATUS: &str = "http.response.status_code";
pub(crate) const SLO_MS: &str = "nusa.slo_ms";

/// Parent-based, else the ratio by trace id; never drops a span, so that a
/// request the head did not sample can still be kept when it turns out
/// slow or failed.
#[derive(Clone, Debug)]
pub(crate) struct HeadSampler {
    pub ratio: f64,
}

impl ShouldSample for HeadSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        let parent: Option<SpanContext> = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().clone())
            .filter(SpanContext::is_valid);
        let head = match &parent {
            None => Parent::Root,
            Some(sc) if sc.is_remote() => Parent::Remote {
                sampled: sc.is_sampled(),
            },
            Some(sc) => Parent::Local {
                sampled: sc.is_sampled(),
            },
        };
        let sampled = core::head(head, u128::from_be_bytes(trace_id.to_bytes()), self.ratio);
        SamplingResult {
            decision: if sampled {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::RecordOnly
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|sc| sc.trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// Holds each trace's finished spans until its local root ends (the
/// request's span, whose parent is absent or remote), then keeps or drops
/// them all at once. Spans of a trace whose root never ends here are
/// evicted when the buffer is full, oldest trace first, and counted.
pub(crate) struct TailProcessor {
    pending: Mutex<Pending<SpanData>>,
    queue: Queue,
}

impl TailProcessor {
    pub fn new(buffer_spans: usize, queue: Queue) -> TailProcessor {
        TailProcessor {
            pending: Mutex::new(Pending::new(buffer_spans)),
            queue,
        }
    }
}

impl fmt::Debug for TailProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailProcessor")
            .field("pending", &self.pending.lock().len())
            .finish()
    }
}

impl SpanProcessor for TailProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let trace = u128::from_be_bytes(span.span_context.trace_id().to_bytes());
        let local_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
        if !local_root {
            let evicted = self.pending.lock().push(trace, span);
            metrics::lost(Lost::BufferFull, evicted);
            return;
        }
        let verdict = core::verdict(span.span_context.is_sampled(), &outcome(&span));
        let mut spans = self.pending.lock().take(trace);
        metrics::decided(verdict);
        if verdict.keep() {
            spans.push(span);
            self.queue.send(spans);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.queue.stop(timeout);
        Ok(())
    }
}

/// How the request ended, from its root span's times and attributes.
fn outcome(root: &SpanData) -> Outcome {
    let int = |key: &str| {
        root.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .and_then(|kv| match &kv.value {
                Value::I64(n) => u64::try_from(*n).ok(),
                Value::String(s) => s.as_str().parse().ok(),
                _ => None,
            })
    };
    Outcome {
        duration: root
            .end_time
            .duration_since(root.start_time)
            .unwrap_or_default(),
        slo: int(SLO_MS).map(Duration::from_millis),
        status: int(STATUS).and_then(|s| u16::try_from(s).ok()),
    }
}

#[cfg(test)]
// Tests give spans their times.
#[allow(clippy::disallowed_types)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use opentelemetry::trace::{
        SpanContext, TraceContextExt, TraceFlags, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use parking_lot::Mutex;

    use super::*;

    #[derive(Clone, Debug, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().extend(batch);
            Ok(())
        }
    }

    /// A root span of `ms` milliseconds answering `status`, with one child,
    /// under `parent` (a context with a remote span, or none).
    fn request(
        tracer: &opentelemetry_sdk::trace::SdkTracer,
        parent: &Context,
        ms: u64,
        status: i64,
    ) {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let root = tracer
            .span_builder("request")
            .with_start_time(t0)
            .with_attributes([KeyValue::new(STATUS, status), KeyValue::new(SLO_MS, 50_i64)])
            .start_with_context(tracer, parent);
        let cx = parent.with_span(root);
        let mut child = tracer.start_with_context("compute", &cx);
        opentelemetry::trace::Span::end_with_timestamp(&mut child, t0 + Duration::from_millis(1));
        cx.span().end_with_timestamp(t0 + Duration::from_millis(ms));
    }

    #[test]
    fn only_sampled_slow_and_failed_traces_are_exported_whole() {
        let out = Collect::default();
        let queue = crate::driver::export::start(out.clone(), 64, Duration::from_secs(5)).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_sampler(HeadSampler { ratio: 0.0 })
            .with_span_processor(TailProcessor::new(64, queue))
            .build();
        let tracer = provider.tracer("test");
        let none = Context::new();
        request(&tracer, &none, 10, 200); // fast, not sampled: dropped
        request(&tracer, &none, 10, 503); // failed
        request(&tracer, &none, 80, 200); // slower than its 50 ms
        let caller = |flags| {
            none.with_remote_span_context(SpanContext::new(
                TraceId::from(7_u128),
                SpanId::from(9_u64),
                flags,
                true,
                TraceState::default(),
            ))
        };
        request(&tracer, &caller(TraceFlags::SAMPLED), 10, 200); // the caller's decision
        request(&tracer, &caller(TraceFlags::default()), 10, 200); // likewise: dropped
        provider.shutdown().unwrap();
        let spans = out.0.lock();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        // Three traces of two spans each, each trace whole.
        assert_eq!(names.len(), 6, "{names:?}");
        let roots: Vec<&SpanData> = spans.iter().filter(|s| s.name == "request").collect();
        let outcomes: Vec<Outcome> = roots.iter().map(|r| outcome(r)).collect();
        assert_eq!(outcomes[0].status, Some(503));
        assert_eq!(outcomes[1].duration, Duration::from_millis(80));
        assert_eq!(outcomes[1].slo, Some(Duration::from_millis(50)));
        let continued = roots[2];
        assert_eq!(continued.span_context.trace_id(), TraceId::from(7_u128));
        assert_eq!(continued.parent_span_id, SpanId::from(9_u64));
        assert!(continued.parent_span_is_remote && continued.span_context.is_sampled());
        for r in &roots {
            let children = spans
                .iter()
                .filter(|s| s.parent_span_id == r.span_context.span_id())
                .count();
            assert_eq!(children, 1, "{r:?}");
        }
    }
}

//! What the request path calls. Every function returns at once when
//! tracing is off (one relaxed load), and the request spans' target is
//! enabled by no layer then, so their macros cost a cached callsite check.
// Spans for work measured elsewhere (the scheduler's queue and batch) are
// given their times: Instant, converted to the wall clock here.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::sampling::{SLO_MS, STATUS};
use crate::core::{TraceContext, TraceParent};

/// The target of every request span. Only the OpenTelemetry layer
/// enables it: the log never prints these spans.
pub const TARGET: &str = "nusa_span";

static ON: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether request traces are recorded (`[tracing] otlp_endpoint` set).
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

pub(crate) fn turn_on(tracer: SdkTracer) {
    if TRACER.set(tracer).is_ok() {
        ON.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn turn_off() {
    ON.store(false, Ordering::Relaxed);
}

/// A request's root span (server kind): `protocol` is the HTTP version
/// (`1.1`, `2`, `3`). It continues the caller's trace when it sent a
/// valid `traceparent`; otherwise it starts one. The answer's status,
/// the model and its objective are recorded later ([`record_outcome`]).
pub fn request_span(
    protocol: &'static str,
    method: &str,
    path: &str,
    caller: Option<&TraceContext>,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.path = path,
        network.protocol.name = "http",
        network.protocol.version = protocol,
        http.response.status_code = tracing::field::Empty,
        nusa.model = tracing::field::Empty,
        nusa.slo_ms = tracing::field::Empty,
        nusa.served_by = tracing::field::Empty,
    );
    continue_trace(&span, caller);
    span
}

/// Makes `span` (a fresh root) a child of the caller's span, when there
/// is a caller.
fn continue_trace(span: &Span, caller: Option<&TraceContext>) {
    if let Some(c) = caller {
        let state = c
            .state
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            TraceId::from_bytes(c.parent.trace_id.to_be_bytes()),
            SpanId::from_bytes(c.parent.parent_id.to_be_bytes()),
            TraceFlags::new(c.parent.flags & 1),
            true,
            state,
        );
        // Only fails when the span is off or already started, neither of
        // which a fresh span is.
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// One run of the OS updater (`nusactl update auto|apply|download|boot`):
/// the root span of its steps ([`update_step`]). An update attempt that
/// runs over several processes (downloaded by one run, applied by the
/// next, its health gate after the reboot) is one trace: each run after
/// the first continues the context the previous one left
/// ([`outgoing`]).
pub fn update_span(command: &'static str, caller: Option<&TraceContext>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "update",
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        nusa.update.command = command,
        nusa.update.release = tracing::field::Empty,
        nusa.update.state = tracing::field::Empty,
    );
    continue_trace(&span, caller);
    span
}

/// A step of an update (`check`, `download`, `write`, `verify`, `arm`,
/// `switch_boot`, `reboot`, `health`, `mark_good`) under the current
/// span (the run's [`update_span`]); a failed step records its reason.
pub fn update_step(step: &'static str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "update_step",
        otel.name = step,
        otel.status_code = tracing::field::Empty,
        nusa.update.step = step,
        nusa.update.error = tracing::field::Empty,
    )
}

/// Marks an update step (or run) failed, with why.
pub fn record_failure(span: &Span, reason: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("nusa.update.error", reason);
}

/// Records on a request's root span what the tail decision reads: the
/// status answered and, for an inference request, the model's objective.
pub fn record_outcome(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    span.record(STATUS, i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records on the current span (the request's root span, in the API) the
/// model the request named and the model's objective (which makes a
/// slower request a slow one, kept by the tail decision).
pub fn record_model(model: &str, slo_ms: Option<u64>) {
    if !enabled() {
        return;
    }
    let span = Span::current();
    span.record("nusa.model", model);
    if let Some(ms) = slo_ms {
        span.record(SLO_MS, ms.min(i64::MAX as u64) as i64);
    }
}

/// Records a finished span under the current span for work measured
/// elsewhere: the queue wait and the batch, which the scheduler times and
/// which other requests' spans share. `attributes` runs only when tracing
/// is on.
pub fn span_between(
    name: &'static str,
    start: Instant,
    end: Instant,
    attributes: impl FnOnce() -> Vec<KeyValue>,
) {
    if !enabled() {
        return;
    }
    let parent = Span::current();
    if parent.is_disabled() {
        return;
    }
    let Some(tracer) = TRACER.get() else { return };
    let cx = parent.context();
    if !cx.has_active_span() {
        return;
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    let at = |t: Instant| {
        wall.checked_sub(now.saturating_duration_since(t))
            .unwrap_or(wall)
    };
    let mut span = tracer
        .span_builder(name)
        .with_start_time(at(start))
        .with_attributes(attributes())
        .start_with_context(tracer, &cx);
    opentelemetry::trace::Span::end_with_timestamp(&mut span, at(end.max(start)));
}

/// The trace context to send with a call made under `span` (a region's
/// `traceparent` and `tracestate`), so that the callee's spans join the
/// trace as its children; `None` when tracing is off.
pub fn outgoing(span: &Span) -> Option<TraceContext> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(TraceContext {
        parent: TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            parent_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            flags: sc.trace_flags().to_u8() & 1,
        },
        state: (!state.is_empty()).then_some(state),
    })
}

/// The answer's way out: the `send` span, from the answer leaving the API
/// until its body was handed to the connection (dropped then), after
/// which the request's root span ends.
pub struct Sending {
    send: Span,
    root: Span,
}

/// Starts sending an answer of `bytes`; `None` with tracing off.
pub fn sending(root: &Span, bytes: usize) -> Option<Sending> {
    if root.is_disabled() {
        return None;
    }
    let send = tracing::info_span!(
        target: TARGET,
        parent: root,
        "send",
        nusa.bytes = bytes as i64,
    );
    Some(Sending {
        send,
        root: root.clone(),
    })
}

impl Drop for Sending {
    fn drop(&mut self) {
        // The send span's only handle: it ends now.
        drop(std::mem::replace(&mut self.send, Span::none()));
        // tracing-opentelemetry ends a span at its last exit, and the root
        // was last left when the API answered: entering it once more moves
        // its end after the send.
        self.root.in_scope(|| {});
    }
}

//! Request traces (OpenTelemetry over OTLP/HTTP) and `Server-Timing`.
//!
//! In the order a request meets them:
//! - the ingress reads the caller's W3C trace context
//!   ([`TraceParent::parse`], [`tracestate`]) and opens the request's root
//!   span ([`request_span`]), continuing the caller's trace; the API, the
//!   dispatcher and the ingress add child spans with `tracing`'s macros
//!   under [`TARGET`], and spans for the scheduler's queue wait and batch
//!   with their measured times ([`span_between`]); a region call sends
//!   its own span's context ([`outgoing`]) so the region's spans join;
//! - the head decision ([`core::head`]: the caller's sampled flag, else
//!   `sample_ratio` by trace id) only marks spans: every span is recorded,
//!   and held by trace until the request's root span ends;
//! - the tail decision ([`core::verdict`]) then keeps the trace if the head
//!   sampled it, if it was slower than the model's `slo_ms`, or if it
//!   answered 5xx; kept spans go to a bounded queue that a thread of its
//!   own exports (`driver/export.rs`). A full buffer or queue drops spans
//!   and counts them (`nusa_trace_spans_dropped_total`); nothing on the
//!   request path waits for the collector.
//! - [`server_timing`] writes the `Server-Timing` header from the
//!   dispatcher's [`Phases`].
//!
//! Off (no `otlp_endpoint`), no layer enables the request spans' target
//! and every function here returns after one relaxed load.
//!
//! `core` does no I/O and reads no clock (the crate's `clippy.toml`).

pub mod core;
mod driver;

pub use crate::core::{server_timing, tracestate, Phases, TraceContext, TraceParent};
pub use driver::{
    enabled, layer, outgoing, record_failure, record_model, record_outcome, register_metrics,
    request_span, sending, span_between, update_span, update_step, InstallError, Sending, Settings,
    Tracing, TARGET,
};
pub use opentelemetry::KeyValue;

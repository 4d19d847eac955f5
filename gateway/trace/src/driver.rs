//! The driver around the core: the subscriber layer that turns the
//! request spans into OpenTelemetry spans (`install`), the SDK's head
//! sampler and tail processor (`sampling`), the exporter thread
//! (`export`), the helpers the request path calls (`spans`) and the
//! `nusa_trace_*` metrics.

mod export;
mod install;
mod metrics;
mod sampling;
mod spans;

pub use install::{layer, InstallError, Settings, Tracing};
pub use metrics::register_metrics;
pub use spans::{
    enabled, outgoing, record_failure, record_model, record_outcome, request_span, sending,
    span_between, update_span, update_step, Sending, TARGET,
};

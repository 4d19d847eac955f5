//! Drift monitoring as a core: no I/O and no clock.
//!
//! **Invariant:** nothing under `core` reads a file, a socket or a clock
//! (the crate's `clippy.toml` bans them; only `driver/clock.rs` allows the
//! lints). Every call that depends on time takes `now_ms`.
//!
//! In the order a sampled request meets it:
//! - [`Sampler::sample`]: one request in `sample_every`.
//! - [`Monitor::observe`]: decodes the first `max_elements` elements of
//!   each tensor ([`decode_prefix`]) into its [`Summary`]: Welford
//!   [`Moments`] and counts in fixed buckets ([`Edges`], learned once per
//!   version and tensor from its first 2048 values), plus the argmax class
//!   of classifier outputs.
//! - [`Monitor::poll`]: fixes the baseline when due, then closes each
//!   window and compares it with the baseline by [`psi`].
//! - [`Monitor::report`]: the [`Report`] the CLI and status page show.

mod baseline;
mod config;
mod decode;
mod monitor;
mod psi;
mod report;
mod sample;
mod summary;

pub use baseline::{Baseline, BaselineError, Kind, TensorBaseline};
pub use config::{
    ConfigError, DriftConfig, Settings, MAX_CLASSES, MAX_ELEMENTS_LIMIT, MAX_TENSORS,
    WARMUP_PER_SAMPLE, WARMUP_VALUES,
};
pub use decode::{argmax, decode_prefix};
pub use monitor::{Monitor, Poll};
pub use psi::{proportions, psi, PSI_EPSILON, PSI_NO_SHIFT, PSI_SIGNIFICANT};
pub use report::{Phase, Report, Source, TensorReport, WindowStatus};
pub use sample::Sampler;
pub use summary::{Edges, Moments, Summary, MAX_EDGES, QUANTILES};

#[cfg(test)]
mod tests;

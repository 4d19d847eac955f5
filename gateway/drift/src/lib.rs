//! Model drift monitoring: per model version, bounded summaries of what
//! goes in and what comes out, compared every window with a baseline.
//!
//! For each tensor (at most 32 per version, the first `max_elements`
//! elements of each sampled one): mean and standard deviation (Welford),
//! min and max, and counts in buckets whose edges are fixed once per
//! version and tensor (the warm-up's deciles); for a classifier's output
//! (`[batch, classes]`, float) also the distribution of the argmax class.
//! One request in `sample_every` is summarized, off the request path. A
//! version's baseline is learned over its first `baseline_s` (or published
//! with it); each `window_s` window is then compared with it by the
//! population stability index ([`psi`]): < 0.1 no shift, 0.1-0.25
//! moderate, > 0.25 significant.
//!
//! - `core`: [`Monitor`], [`Summary`], [`Edges`], [`psi`], [`Baseline`],
//!   [`Report`], with no I/O and no clock (time is always `now_ms`).
//! - [`Drift`]: the driver nusad holds: the sampling decision, the bounded
//!   queue, the task that folds samples and closes windows on tokio's
//!   clock, and the `nusa_model_drift_*` metrics.
//!
//! ```
//! use nusa_drift::{Kind, Monitor, Phase, Settings};
//! use nusa_tensor::{DataType, Tensor};
//!
//! let settings = Settings { baseline_ms: 1_000, baseline_min_samples: 1, min_window_samples: 1, window_ms: 1_000, ..Settings::default() };
//! let mut m = Monitor::new("fraud", 3, settings, 0);
//! let x = |v: f32| Tensor { name: "x".into(), datatype: DataType::Fp32, shape: vec![1], data: v.to_le_bytes().to_vec().into() };
//! for i in 0..100 { m.observe(&[x(i as f32)], &[]); }
//! m.poll(1_000);
//! assert_eq!(m.report().phase, Phase::Watching);
//! for _ in 0..100 { m.observe(&[x(500.0)], &[]); }
//! m.poll(2_000);
//! let t = &m.report().tensors[0];
//! assert_eq!(t.kind, Kind::Input);
//! assert!(t.drifted && t.psi.unwrap() > 0.25);
//! ```

mod core;
mod driver;
#[cfg(test)]
mod testutil;

pub use crate::core::{
    argmax, decode_prefix, proportions, psi, Baseline, BaselineError, ConfigError, DriftConfig,
    Edges, Kind, Moments, Monitor, Phase, Poll, Report, Sampler, Settings, Source, Summary,
    TensorBaseline, TensorReport, WindowStatus, MAX_CLASSES, MAX_EDGES, MAX_ELEMENTS_LIMIT,
    MAX_TENSORS, PSI_EPSILON, PSI_NO_SHIFT, PSI_SIGNIFICANT, QUANTILES, WARMUP_PER_SAMPLE,
    WARMUP_VALUES,
};
pub use driver::{Drift, MAX_MODELS, QUEUE_SAMPLES, VERSIONS_PER_MODEL};

//! `[drift]` in nusad's config, and the limits that are not configurable.

use serde::{Deserialize, Serialize};

/// Tensors tracked per model version (inputs, outputs and argmax entries
/// together); more are ignored and counted in the report.
pub const MAX_TENSORS: usize = 32;

/// Classes kept apart in an argmax distribution; higher class indices are
/// counted together as "other".
pub const MAX_CLASSES: usize = 1024;

/// Finite values that fix a tensor's bucket edges.
pub const WARMUP_VALUES: usize = 2048;

/// At most this many of one request's values go into the warm-up, so the
/// edges come from at least 8 requests, not from one large tensor.
pub const WARMUP_PER_SAMPLE: usize = WARMUP_VALUES / 8;

/// The largest `max_elements` accepted.
pub const MAX_ELEMENTS_LIMIT: usize = 1 << 20;

/// `[drift]`: sampling, windows and judgement of model drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Off: `observe` returns at once and nothing is summarized.
    pub enabled: bool,
    /// One request in this many is sampled (a counter, not a coin).
    pub sample_every: u64,
    /// Length of a judged window, in seconds.
    pub window_s: u64,
    /// A version's baseline is learned over at least this long from its
    /// first sampled request...
    pub baseline_s: u64,
    /// ...and from at least this many sampled requests.
    pub baseline_min_samples: u64,
    /// A window with fewer sampled requests carrying a tensor does not
    /// judge that tensor ("insufficient samples").
    pub min_window_samples: u64,
    /// PSI above this is drift.
    pub threshold: f64,
    /// Elements read from each sampled tensor (its first ones, row-major).
    pub max_elements: usize,
}

impl Default for DriftConfig {
    fn default() -> DriftConfig {
        DriftConfig {
            enabled: true,
            sample_every: 16,
            window_s: 300,
            baseline_s: 3600,
            baseline_min_samples: 1000,
            min_window_samples: 200,
            threshold: super::psi::PSI_SIGNIFICANT,
            max_elements: 4096,
        }
    }
}

/// A `[drift]` value out of range; names the key.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("drift.{key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: &'static str,
}

impl DriftConfig {
    /// For the config loader (a bad value exits 64). The driver also
    /// clamps, so an unchecked config cannot make it divide by zero.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key, reason| Err(ConfigError { key, reason });
        if self.sample_every == 0 {
            return bad("sample_every", "must be at least 1");
        }
        if self.window_s == 0 {
            return bad("window_s", "must be at least 1");
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return bad("threshold", "must be a positive number");
        }
        if self.max_elements == 0 || self.max_elements > MAX_ELEMENTS_LIMIT {
            return bad("max_elements", "must be between 1 and 1048576");
        }
        Ok(())
    }

    /// The core's settings, in milliseconds, clamped into range.
    pub fn settings(&self) -> Settings {
        Settings {
            window_ms: self.window_s.max(1).saturating_mul(1000),
            baseline_ms: self.baseline_s.saturating_mul(1000),
            baseline_min_samples: self.baseline_min_samples,
            min_window_samples: self.min_window_samples.max(1),
            threshold: if self.threshold.is_finite() && self.threshold > 0.0 {
                self.threshold
            } else {
                super::psi::PSI_SIGNIFICANT
            },
            max_elements: self.max_elements.clamp(1, MAX_ELEMENTS_LIMIT),
        }
    }
}

/// What a [`Monitor`](super::Monitor) needs of the config, times in ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub window_ms: u64,
    pub baseline_ms: u64,
    pub baseline_min_samples: u64,
    pub min_window_samples: u64,
    pub threshold: f64,
    pub max_elements: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        DriftConfig::default().settings()
    }
}

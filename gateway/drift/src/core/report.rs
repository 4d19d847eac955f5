//! What `nusactl models drift NAME` and the status page show.

use serde::{Deserialize, Serialize};

use super::baseline::Kind;

/// Where a version's monitor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Learning the baseline; some tensor's bucket edges are not fixed yet.
    Warmup,
    /// Learning the baseline with every tensor's edges fixed.
    Baseline,
    /// Judging each window against the baseline.
    Watching,
}

/// Whether the baseline was learned on this box or published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Learned,
    Published,
}

/// How the last closed window went for a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// No window closed yet.
    Pending,
    /// Fewer sampled requests than `min_window_samples` carried it: not
    /// judged; `psi` and `drifted` stay those of the last judged window.
    InsufficientSamples,
    Judged,
}

/// One model version's drift.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub version: u64,
    pub phase: Phase,
    pub source: Source,
    /// Sampled requests the learned baseline has (so far).
    pub baseline_samples: u64,
    /// Sampled requests summarized, all phases.
    pub samples: u64,
    pub window_s: u64,
    /// Windows closed since watching began.
    pub windows: u64,
    /// Tensor observations left out: past the 32 tracked, or first seen
    /// after the baseline was fixed.
    pub ignored_tensors: u64,
    pub tensors: Vec<TensorReport>,
}

/// One tensor's drift. `current_*`, `samples` and `values` are of the last
/// closed window (during the baseline, `baseline_*` are the figures so
/// far); `psi` and `drifted` of the last judged one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorReport {
    pub name: String,
    pub kind: Kind,
    pub baseline_mean: Option<f64>,
    pub baseline_std: Option<f64>,
    pub current_mean: Option<f64>,
    pub current_std: Option<f64>,
    pub psi: Option<f64>,
    pub worst_psi: Option<f64>,
    pub samples: u64,
    pub values: u64,
    pub threshold: f64,
    pub drifted: bool,
    pub status: WindowStatus,
}

impl Report {
    /// Any tensor drifted in its last judged window.
    pub fn drifted(&self) -> bool {
        self.tensors.iter().any(|t| t.drifted)
    }
}

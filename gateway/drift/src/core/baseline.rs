//! The baseline a window is compared with: learned over a version's first
//! hour, or published with the version.

use serde::{Deserialize, Serialize};

use super::config::{MAX_CLASSES, MAX_TENSORS};
use super::summary::Edges;

/// Which side of the model a summary is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Input,
    Output,
    /// The class each row of a classifier's output picks: a 2-D float
    /// output `[batch, classes]` with at least two classes.
    Argmax,
}

impl Kind {
    /// The `kind` label of the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Output => "output",
            Kind::Argmax => "argmax",
        }
    }
}

/// A version's baseline, as published beside it (JSON or TOML) or as
/// exported from a learned one ([`Monitor::baseline`](super::Monitor::baseline)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    pub tensors: Vec<TensorBaseline>,
}

/// One tensor's baseline.
///
/// `input`/`output`: `edges` (finite, strictly increasing, at most 64) make
/// `edges.len() + 1` buckets, bucket `i` holding `edges[i-1] <= x <
/// edges[i]`; `proportions` has one entry per bucket and `nan` the share
/// of NaN values. `argmax`: no edges; `proportions[c]` is the share of rows
/// whose argmax is class `c` (2 to 1024 classes) and `other` the share of
/// higher classes. Proportions need not sum to exactly 1 (they are
/// normalized) but must not all be zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorBaseline {
    pub name: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
    #[serde(default)]
    pub nan: f64,
    #[serde(default)]
    pub other: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    /// Sampled requests it was learned from (0 when unknown).
    #[serde(default)]
    pub samples: u64,
}

/// Why a published baseline was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BaselineError {
    #[error("baseline: {count} tensors, at most {MAX_TENSORS} are tracked")]
    TooManyTensors { count: usize },
    #[error("baseline of {kind:?} tensor '{name}': {reason}")]
    Tensor {
        name: String,
        kind: Kind,
        reason: &'static str,
    },
}

/// A tensor's baseline as the monitor compares with it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frozen {
    /// `None` for argmax.
    pub edges: Option<Edges>,
    /// Numeric: per bucket, then NaN. Argmax: per class, then other.
    pub expected: Vec<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub samples: u64,
}

impl Frozen {
    pub(crate) fn from_published(t: &TensorBaseline) -> Result<Frozen, BaselineError> {
        let bad = |reason| BaselineError::Tensor {
            name: t.name.clone(),
            kind: t.kind,
            reason,
        };
        let (edges, rest) = match t.kind {
            Kind::Argmax => {
                if !t.edges.is_empty() {
                    return Err(bad("an argmax baseline has no edges"));
                }
                if !(2..=MAX_CLASSES).contains(&t.proportions.len()) {
                    return Err(bad("an argmax baseline has 2 to 1024 class proportions"));
                }
                (None, t.other)
            }
            Kind::Input | Kind::Output => {
                let edges = Edges::given(t.edges.clone()).ok_or_else(|| {
                    bad("edges must be finite, strictly increasing and at most 64")
                })?;
                if t.proportions.len() != edges.buckets() {
                    return Err(bad("proportions must have one entry more than edges"));
                }
                (Some(edges), t.nan)
            }
        };
        let mut expected = t.proportions.clone();
        expected.push(rest);
        if expected.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
            return Err(bad("proportions must be finite and not negative"));
        }
        let sum: f64 = expected.iter().sum();
        if sum <= 0.0 || !sum.is_finite() {
            return Err(bad("proportions must not all be zero"));
        }
        expected.iter_mut().for_each(|p| *p /= sum);
        Ok(Frozen {
            edges,
            expected,
            mean: t.mean.filter(|m| m.is_finite()),
            std: t.std.filter(|s| s.is_finite()),
            samples: t.samples,
        })
    }

    pub(crate) fn published(&self, name: &str, kind: Kind) -> TensorBaseline {
        let (rest, proportions) = match self.expected.split_last() {
            Some((rest, head)) => (*rest, head.to_vec()),
            None => (0.0, Vec::new()),
        };
        let numeric = kind != Kind::Argmax;
        TensorBaseline {
            name: name.to_string(),
            kind,
            edges: self
                .edges
                .as_ref()
                .map(|e| e.as_slice().to_vec())
                .unwrap_or_default(),
            proportions,
            nan: if numeric { rest } else { 0.0 },
            other: if numeric { 0.0 } else { rest },
            mean: self.mean,
            std: self.std,
            samples: self.samples,
        }
    }
}

//! How a rollout runs: its steps, timing, traffic split and thresholds, and
//! the optional keys that config files, a published policy and the CLI layer
//! over it.

use serde::{Deserialize, Serialize};

/// How a rollout runs. Only [`Plan::validate`]d plans drive a
/// [`Rollout`](crate::Rollout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// The candidate's percent of traffic per step: strictly increasing,
    /// each in `1..=100`, ending at 100.
    pub steps: Vec<u32>,
    /// The least a step lasts, seconds (a step ends at the first passing
    /// check after it).
    pub step_s: u64,
    /// Seconds between checks within a step, `1..=step_s`.
    pub check_s: u64,
    pub split: Split,
    /// Also copy a sample of stable-served requests to the candidate and
    /// compare its outputs.
    pub shadow: bool,
    /// Share `(0, 1]` of stable-served requests copied in shadow mode.
    pub shadow_sample: f64,
    /// Absolute and relative tolerance of the comparison (numpy `allclose`).
    pub shadow_atol: f64,
    pub shadow_rtol: f64,
    /// How far the candidate's error rate may exceed the baseline's
    /// (absolute share, `0..=1`).
    pub max_error_rate: f64,
    /// Candidate p99 of local compute may be at most the baseline's times
    /// this (`>= 1`).
    pub max_p99_ratio: f64,
    /// Shadow mode: share of comparisons that must agree, `0..=1`.
    pub min_agreement: f64,
    /// Requests per arm (and comparisons, in shadow mode) in a step's window
    /// before a check judges; `>= 1`.
    pub min_requests: u64,
    /// Failed checks, counted over the whole rollout, that roll back; `>= 1`.
    pub max_failed_checks: u32,
}

/// How requests are drawn onto the candidate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// By client (API key or address): one client sees one version for a
    /// whole step, and stays on the candidate as the percent grows.
    #[default]
    Key,
    /// Each request drawn anew (the driver passes a per-request key).
    Request,
}

/// The keys of [`Plan`], all optional: `[rollout]` in nusad's config and in
/// a model's `config.toml`, a published policy, the CLI's overrides.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_sample: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_atol: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_rtol: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_failed_checks: Option<u32>,
}

/// A plan key with a bad value; the message names the key, e.g.
/// `rollout.steps must end at 100 (got [1, 5, 50])`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Replaces each field of `$to` for which `$from` has `Some`.
macro_rules! layer {
    ($to:expr, $from:expr, $($field:ident),+ $(,)?) => {
        $( if let Some(v) = &$from.$field { $to.$field = v.clone().into(); } )+
    };
}

macro_rules! each_field {
    ($m:ident, $to:expr, $from:expr) => {
        $m!(
            $to,
            $from,
            steps,
            step_s,
            check_s,
            split,
            shadow,
            shadow_sample,
            shadow_atol,
            shadow_rtol,
            max_error_rate,
            max_p99_ratio,
            min_agreement,
            min_requests,
            max_failed_checks,
        )
    };
}

impl Plan {
    /// This plan with the spec's `Some` fields in place, validated.
    pub fn with(&self, spec: &PlanSpec) -> Result<Plan, PlanError> {
        let mut plan = self.clone();
        each_field!(layer, plan, spec);
        plan.validate()?;
        Ok(plan)
    }

    pub fn validate(&self) -> Result<(), PlanError> {
        let err = |msg: String| Err(PlanError(format!("rollout.{msg}")));
        let steps = &self.steps;
        if steps.is_empty() {
            return err("steps must not be empty".into());
        }
        // A first step of 0 in shadow mode judges the candidate on shadow
        // copies alone: no client gets its answers until it passed.
        if steps.first() == Some(&0) && !self.shadow {
            return err(format!(
                "steps may start at 0 only in shadow mode (rollout.shadow = true): without it the candidate would get no request to judge (got {steps:?})"
            ));
        }
        if steps
            .iter()
            .enumerate()
            .any(|(i, p)| *p > 100 || (*p == 0 && i > 0))
        {
            return err(format!(
                "steps must each be between 1 and 100 (got {steps:?})"
            ));
        }
        if steps.windows(2).any(|w| w[0] >= w[1]) {
            return err(format!("steps must be strictly increasing (got {steps:?})"));
        }
        if steps.last() != Some(&100) {
            return err(format!("steps must end at 100 (got {steps:?})"));
        }
        if self.step_s < 1 {
            return err(format!("step_s must be at least 1 (got {})", self.step_s));
        }
        if !(1..=self.step_s).contains(&self.check_s) {
            return err(format!(
                "check_s must be between 1 and step_s ({}) (got {})",
                self.step_s, self.check_s
            ));
        }
        let share = |key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                err(format!("{key} must be between 0 and 1 (got {v})"))
            }
        };
        if !(self.shadow_sample > 0.0 && self.shadow_sample <= 1.0) {
            return err(format!(
                "shadow_sample must be above 0 and at most 1 (got {})",
                self.shadow_sample
            ));
        }
        for (key, v) in [
            ("shadow_atol", self.shadow_atol),
            ("shadow_rtol", self.shadow_rtol),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{key} must be a finite number >= 0 (got {v})"));
            }
        }
        share("max_error_rate", self.max_error_rate)?;
        if !(self.max_p99_ratio.is_finite() && self.max_p99_ratio >= 1.0) {
            return err(format!(
                "max_p99_ratio must be a finite number >= 1 (got {})",
                self.max_p99_ratio
            ));
        }
        share("min_agreement", self.min_agreement)?;
        if self.min_requests < 1 {
            return err(format!(
                "min_requests must be at least 1 (got {})",
                self.min_requests
            ));
        }
        if self.max_failed_checks < 1 {
            return err(format!(
                "max_failed_checks must be at least 1 (got {})",
                self.max_failed_checks
            ));
        }
        Ok(())
    }

    /// The step's percent; 100 past the end (only a bad saved state has one).
    pub(crate) fn percent(&self, step: usize) -> u32 {
        self.steps.get(step).copied().unwrap_or(100)
    }

    pub(crate) fn step_ms(&self) -> u64 {
        self.step_s.saturating_mul(1000)
    }

    pub(crate) fn check_ms(&self) -> u64 {
        self.check_s.saturating_mul(1000).max(1)
    }
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            steps: vec![1, 5, 25, 50, 100],
            step_s: 300,
            check_s: 30,
            split: Split::Key,
            shadow: false,
            shadow_sample: 0.1,
            shadow_atol: 1e-4,
            shadow_rtol: 1e-3,
            max_error_rate: 0.01,
            max_p99_ratio: 1.5,
            min_agreement: 0.99,
            min_requests: 100,
            max_failed_checks: 2,
        }
    }
}

impl PlanSpec {
    /// `over` layered on this spec: its `Some` fields win. Layers combine
    /// (config, then a model's config, then the CLI) before one
    /// [`Plan::with`], so that only the result must be valid.
    pub fn then(&self, over: &PlanSpec) -> PlanSpec {
        let mut out = self.clone();
        each_field!(layer, out, over);
        out
    }
}

#[cfg(test)]
mod tests;

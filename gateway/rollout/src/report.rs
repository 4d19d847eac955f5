//! What `nusactl models canary status` shows of a rollout.

use serde::{Deserialize, Deserializer, Serialize};

use crate::plan::{Plan, Split};
use crate::rollout::{Phase, Rollout};
use crate::window::Figures;

/// A rollout's state and the evidence of its current step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub stable: u64,
    pub candidate: u64,
    pub phase: Phase,
    pub step: usize,
    pub steps: Vec<u32>,
    pub percent: u32,
    pub split: Split,
    /// The shadow comparisons of the step; `None` unless in shadow mode.
    pub shadow: Option<ShadowReport>,
    pub step_started_ms: u64,
    /// When the step may end (at the first passing check from then on).
    pub step_ends_ms: u64,
    /// `None` unless running.
    pub next_check_ms: Option<u64>,
    pub failed_checks: u32,
    /// The step's windows.
    pub arms: Arms,
    /// The stable figures the last check judged against.
    pub baseline: Option<ArmReport>,
    /// The last check's verdict.
    pub last_check: Option<String>,
    pub plan: Plan,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arms {
    pub stable: ArmReport,
    pub candidate: ArmReport,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmReport {
    pub requests: u64,
    pub errors: u64,
    /// 0 with no requests.
    pub error_rate: f64,
    /// p99 of local compute (its histogram bucket's upper bound).
    pub p99_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    pub compared: u64,
    pub agreeing: u64,
    /// `None` before the first comparison.
    pub agreement: Option<f64>,
    /// JSON has no infinity: an infinite maximum (a NaN against a number)
    /// is written as `null` and read back as infinity.
    #[serde(deserialize_with = "null_is_infinite")]
    pub max_abs: f64,
    #[serde(deserialize_with = "null_is_infinite")]
    pub max_rel: f64,
    pub first_disagreement: Option<String>,
}

impl Rollout {
    pub fn report(&self) -> Report {
        let running = self.phase == Phase::Running;
        let s = &self.shadow_window;
        Report {
            stable: self.stable,
            candidate: self.candidate,
            phase: self.phase.clone(),
            step: self.step,
            steps: self.plan.steps.clone(),
            percent: self.percent(),
            split: self.plan.split,
            shadow: self.plan.shadow.then(|| ShadowReport {
                compared: s.compared,
                agreeing: s.agreeing,
                agreement: s.agreement(),
                max_abs: s.max_abs,
                max_rel: s.max_rel,
                first_disagreement: s.first_disagreement.clone(),
            }),
            step_started_ms: self.step_started_ms,
            step_ends_ms: self.step_started_ms.saturating_add(self.plan.step_ms()),
            next_check_ms: running.then_some(self.next_check_ms),
            failed_checks: self.failed_checks,
            arms: Arms {
                stable: ArmReport::from(&self.stable_window.figures()),
                candidate: ArmReport::from(&self.candidate_window.figures()),
            },
            baseline: self.baseline.as_ref().map(ArmReport::from),
            last_check: self.last_check.clone(),
            plan: self.plan.clone(),
        }
    }
}

impl From<&Figures> for ArmReport {
    fn from(f: &Figures) -> ArmReport {
        ArmReport {
            requests: f.requests,
            errors: f.errors,
            error_rate: f.error_rate(),
            p99_ms: f.p99_us.map(|us| us as f64 / 1000.0),
        }
    }
}

fn null_is_infinite<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

//! What the driver persists of a rollout, and the resume after a restart.
//! The windows are not persisted: a restarted step gathers new evidence.

use serde::{Deserialize, Serialize};

use crate::plan::Plan;
use crate::rollout::{Phase, Rollout};
use crate::window::Figures;

/// The format [`Rollout::saved`] writes and the only one `Saved` reads.
pub const SAVED_FORMAT: u32 = 1;

/// A rollout as the driver persists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Saved {
    /// [`SAVED_FORMAT`]; a state written by a newer nusad in another
    /// format fails to deserialize rather than being misread.
    pub format: u32,
    pub stable: u64,
    pub candidate: u64,
    pub plan: Plan,
    pub step: usize,
    pub step_started_ms: u64,
    pub failed_checks: u32,
    pub phase: Phase,
    pub last_check: Option<String>,
    pub baseline: Option<Figures>,
    pub saved_at_ms: u64,
}

/// `Saved` before its format is checked.
#[derive(Deserialize)]
struct Unchecked {
    format: u32,
    stable: u64,
    candidate: u64,
    plan: Plan,
    step: usize,
    step_started_ms: u64,
    failed_checks: u32,
    phase: Phase,
    last_check: Option<String>,
    baseline: Option<Figures>,
    saved_at_ms: u64,
}

impl TryFrom<Unchecked> for Saved {
    type Error = String;

    fn try_from(u: Unchecked) -> Result<Saved, String> {
        if u.format != SAVED_FORMAT {
            return Err(format!(
                "rollout state format {} is not the format this nusad reads ({SAVED_FORMAT})",
                u.format
            ));
        }
        Ok(Saved {
            format: u.format,
            stable: u.stable,
            candidate: u.candidate,
            plan: u.plan,
            step: u.step,
            step_started_ms: u.step_started_ms,
            failed_checks: u.failed_checks,
            phase: u.phase,
            last_check: u.last_check,
            baseline: u.baseline,
            saved_at_ms: u.saved_at_ms,
        })
    }
}

impl Rollout {
    /// What to persist now.
    pub fn saved(&self, now_ms: u64) -> Saved {
        Saved {
            format: SAVED_FORMAT,
            stable: self.stable,
            candidate: self.candidate,
            plan: self.plan.clone(),
            step: self.step,
            step_started_ms: self.step_started_ms,
            failed_checks: self.failed_checks,
            phase: self.phase.clone(),
            last_check: self.last_check.clone(),
            baseline: self.baseline.clone(),
            saved_at_ms: now_ms,
        }
    }

    /// Resumes at the saved step after a restart. Down longer than
    /// `step_s`: the step restarts at `now_ms`; else its start is kept.
    /// Either way the next check is due no earlier than `now_ms + check_s`.
    ///
    /// A running state that cannot run (its plan fails validation, or its
    /// step is past the plan's steps) resumes rolled back, naming why.
    pub fn resume(saved: Saved, now_ms: u64) -> Rollout {
        let Saved {
            stable,
            candidate,
            plan,
            step,
            step_started_ms,
            failed_checks,
            mut phase,
            last_check,
            baseline,
            saved_at_ms,
            ..
        } = saved;
        if phase == Phase::Running {
            let broken = match plan.validate() {
                Err(e) => Some(e.to_string()),
                Ok(()) if step >= plan.steps.len() => Some(format!(
                    "step {step} is past the plan's {} steps",
                    plan.steps.len()
                )),
                Ok(()) => None,
            };
            if let Some(why) = broken {
                phase = Phase::RolledBack {
                    reason: format!("the saved rollout state cannot resume: {why}"),
                };
            }
        }
        let down_ms = now_ms.saturating_sub(saved_at_ms);
        let step_started_ms = if down_ms > plan.step_ms() {
            now_ms
        } else {
            step_started_ms
        };
        let check = plan.check_ms();
        let mut r = Rollout::new(
            stable,
            candidate,
            plan,
            phase,
            step,
            step_started_ms,
            now_ms.saturating_add(check).saturating_sub(1),
        );
        r.failed_checks = failed_checks;
        r.last_check = last_check;
        r.baseline = baseline;
        // A start in the future: the clock went back while nusad was down.
        r.rebase(now_ms);
        r
    }
}

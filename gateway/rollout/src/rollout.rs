//! The rollout of one candidate version against the stable one: its step,
//! the windows of the step, and the checks that advance, promote or roll
//! back.

use serde::{Deserialize, Serialize};

use crate::judge::{judge, Evidence, Verdict};
use crate::plan::{Plan, PlanError};
use crate::shadow::ShadowResult;
use crate::split::{arm_for, unit, Arm};
use crate::window::{Figures, Outcome, ShadowWindow, Window};

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    Running,
    /// The candidate is the stable version now.
    Promoted,
    /// Every request goes to stable.
    RolledBack {
        reason: String,
    },
}

/// What a check decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// A check ran and found too few requests; nothing changes.
    Wait { detail: String },
    /// A check failed but fewer than `max_failed_checks` have failed so far.
    CheckFailed { detail: String, failed_checks: u32 },
    /// Go to the next step (index into `plan.steps`) with this percent. The
    /// step's windows restart.
    Advance { step: usize, percent: u32 },
    /// The 100% step passed: the candidate becomes stable.
    Promote,
    /// Roll back at once: every request to stable. The reason names the
    /// failing checks with their figures and thresholds.
    Rollback { reason: String },
}

/// One canary rollout.
///
/// **Invariant:** no I/O and no clock. Time is the driver's wall clock in
/// Unix milliseconds (`now_ms`); it may go backwards, and all arithmetic on
/// it saturates.
#[derive(Clone, Debug)]
pub struct Rollout {
    pub(crate) stable: u64,
    pub(crate) candidate: u64,
    pub(crate) plan: Plan,
    pub(crate) phase: Phase,
    pub(crate) step: usize,
    pub(crate) step_started_ms: u64,
    pub(crate) next_check_ms: u64,
    /// Over the whole rollout, not per step.
    pub(crate) failed_checks: u32,
    pub(crate) stable_window: Window,
    pub(crate) candidate_window: Window,
    pub(crate) shadow_window: ShadowWindow,
    /// The last stable window with `min_requests` that a check saw.
    pub(crate) baseline: Option<Figures>,
    pub(crate) last_check: Option<String>,
}

impl Rollout {
    /// Starts at step 0 once `plan` validates.
    pub fn start(
        stable: u64,
        candidate: u64,
        plan: Plan,
        now_ms: u64,
    ) -> Result<Rollout, PlanError> {
        plan.validate()?;
        Ok(Rollout::new(
            stable,
            candidate,
            plan,
            Phase::Running,
            0,
            now_ms,
            now_ms,
        ))
    }

    /// The first check is due at `next_check_ms`.
    pub(crate) fn new(
        stable: u64,
        candidate: u64,
        plan: Plan,
        phase: Phase,
        step: usize,
        step_started_ms: u64,
        after_ms: u64,
    ) -> Rollout {
        let next_check_ms = due_after(step_started_ms, plan.check_ms(), after_ms);
        Rollout {
            stable,
            candidate,
            plan,
            phase,
            step,
            step_started_ms,
            next_check_ms,
            failed_checks: 0,
            stable_window: Window::new(),
            candidate_window: Window::new(),
            shadow_window: ShadowWindow::default(),
            baseline: None,
            last_check: None,
        }
    }

    pub fn stable(&self) -> u64 {
        self.stable
    }

    pub fn candidate(&self) -> u64 {
        self.candidate
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Index into `plan().steps`.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The candidate's share now: the step's percent while running, 100
    /// once promoted, 0 once rolled back.
    pub fn percent(&self) -> u32 {
        match self.phase {
            Phase::Running => self.plan.percent(self.step),
            Phase::Promoted => 100,
            Phase::RolledBack { .. } => 0,
        }
    }

    /// Which arm serves a request with this key ([`arm_for`] salted with the
    /// candidate version, so that each rollout draws its own clients).
    pub fn arm(&self, key: &[u8]) -> Arm {
        match self.phase {
            Phase::Running => arm_for(key, self.percent(), self.candidate),
            Phase::Promoted => Arm::Candidate,
            Phase::RolledBack { .. } => Arm::Stable,
        }
    }

    /// Whether to copy a stable-served request to the candidate: in shadow
    /// mode while running, for a `shadow_sample` share of draws.
    /// Deterministic in `draw` (a counter or a random number).
    pub fn shadow(&self, draw: u64) -> bool {
        self.plan.shadow && self.phase == Phase::Running && unit(draw) < self.plan.shadow_sample
    }

    /// Counts one request in the step's window of `arm`; ignored unless
    /// running.
    pub fn record(&mut self, arm: Arm, outcome: Outcome) {
        if self.phase != Phase::Running {
            return;
        }
        match arm {
            Arm::Stable => self.stable_window.record(outcome),
            Arm::Candidate => self.candidate_window.record(outcome),
        }
    }

    /// Counts one shadow comparison; ignored unless running. A candidate
    /// failure on a shadow copy is recorded twice by the driver: as
    /// `record(Candidate, error)` and as a disagreeing result
    /// ([`ShadowResult::candidate_failed`]).
    pub fn record_shadow(&mut self, result: &ShadowResult) {
        if self.phase == Phase::Running {
            self.shadow_window.record(result);
        }
    }

    /// When the next check is due: `step_started + k * check_s`. Only
    /// meaningful while running.
    pub fn next_check_ms(&self) -> u64 {
        self.next_check_ms
    }

    /// Runs the check that is due, if one is and the rollout is running.
    /// `None`: no check was due, or it passed and the step goes on.
    ///
    /// If the wall clock went back before the step's start, the step's time
    /// restarts at `now_ms` (its windows are kept); if it went back so far
    /// that the next check is more than two intervals away, the check moves
    /// to the next due time after `now_ms`.
    pub fn poll(&mut self, now_ms: u64) -> Option<Decision> {
        if self.phase != Phase::Running {
            return None;
        }
        self.rebase(now_ms);
        if now_ms < self.next_check_ms {
            return None;
        }
        let check = self.plan.check_ms();
        self.next_check_ms = due_after(self.step_started_ms, check, now_ms);

        let percent = self.percent();
        let evidence = Evidence {
            stable: self.stable_window.figures(),
            candidate: self.candidate_window.figures(),
            shadow: &self.shadow_window,
            shadow_judged: self.plan.shadow && percent < 100,
        };
        match judge(&self.plan, &evidence, &mut self.baseline) {
            Verdict::Wait(detail) => {
                self.last_check = Some(format!("waiting: {detail}"));
                Some(Decision::Wait { detail })
            }
            Verdict::Fail(reason) => {
                self.failed_checks = self.failed_checks.saturating_add(1);
                let (n, max) = (self.failed_checks, self.plan.max_failed_checks);
                if n >= max {
                    self.last_check = Some(format!("failed ({n} of {max}), rolled back: {reason}"));
                    self.phase = Phase::RolledBack {
                        reason: reason.clone(),
                    };
                    Some(Decision::Rollback { reason })
                } else {
                    self.last_check = Some(format!("failed ({n} of {max}): {reason}"));
                    Some(Decision::CheckFailed {
                        detail: reason,
                        failed_checks: n,
                    })
                }
            }
            Verdict::Pass(figures) => {
                let ends = self.step_started_ms.saturating_add(self.plan.step_ms());
                if now_ms < ends {
                    self.last_check = Some(format!("passed: {figures}"));
                    return None;
                }
                if self.step + 1 >= self.plan.steps.len() {
                    self.last_check = Some(format!("passed, promoted: {figures}"));
                    self.phase = Phase::Promoted;
                    return Some(Decision::Promote);
                }
                self.step += 1;
                let percent = self.percent();
                self.last_check = Some(format!("passed, advanced to {percent}%: {figures}"));
                self.stable_window.clear();
                self.candidate_window.clear();
                self.shadow_window = ShadowWindow::default();
                self.step_started_ms = now_ms;
                self.next_check_ms = now_ms.saturating_add(check);
                Some(Decision::Advance {
                    step: self.step,
                    percent,
                })
            }
        }
    }

    /// The operator rolls back now. False unless running.
    pub fn abort(&mut self, reason: &str) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        self.phase = Phase::RolledBack {
            reason: reason.to_owned(),
        };
        true
    }

    /// The operator promotes now. False unless running.
    pub fn promote(&mut self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        self.phase = Phase::Promoted;
        true
    }

    /// Undoes a wall clock that went back (see [`Rollout::poll`]).
    pub(crate) fn rebase(&mut self, now_ms: u64) {
        let check = self.plan.check_ms();
        if now_ms < self.step_started_ms {
            self.step_started_ms = now_ms;
            self.next_check_ms = now_ms.saturating_add(check);
        } else if self.next_check_ms.saturating_sub(now_ms) > check.saturating_mul(2) {
            self.next_check_ms = due_after(self.step_started_ms, check, now_ms);
        }
    }
}

/// The first `start + k * check` (`k >= 1`) after `t`.
pub(crate) fn due_after(start: u64, check: u64, t: u64) -> u64 {
    let k = match t.checked_sub(start) {
        Some(elapsed) => elapsed / check.max(1) + 1,
        None => 1,
    };
    start.saturating_add(k.saturating_mul(check))
}

#[cfg(test)]
mod tests;

//! The boot half of the updater: after the reboot, the health gate,
//! accepting the new slot or rolling back to the old one.

use super::machine::{Handled, Updater};
use super::{Command, Event, EventError, Rollback, State, Step};
use crate::history::Outcome;
use crate::UnixSecs;

impl Updater {
    pub(super) fn pending_health(
        &mut self,
        event: Event,
        now: UnixSecs,
        unexpected: EventError,
    ) -> Handled {
        let State::PendingHealth {
            release,
            slot,
            deadline,
        } = &self.state
        else {
            return Err(unexpected);
        };
        let (slot, deadline) = (*slot, *deadline);
        match event {
            Event::HealthPassed | Event::MarkGood => Ok(vec![Command::MarkSlotGood { slot }]),
            Event::SlotMarkedGood => {
                let release = release.clone();
                self.history.finish(Outcome::Succeeded, None, now);
                self.history.clear_bad(release.version);
                let cmds = vec![Command::PersistHistory(self.history.clone())];
                Ok(self.set(State::Good { release, slot }, cmds))
            }
            Event::HealthFailed(reason) => Ok(self.roll_back_bad(Step::Health, &reason, now)),
            Event::HealthDeadlinePassed if now < deadline => {
                Err(EventError::DeadlineNotReached { deadline, now })
            }
            Event::HealthDeadlinePassed => {
                let reason = format!(
                    "the health gate did not pass within {} s",
                    self.config.health_timeout_secs
                );
                Ok(self.roll_back_bad(Step::Health, &reason, now))
            }
            Event::Error { step, reason } => Ok(self.roll_back_bad(step, &reason, now)),
            // The new system is not accepted yet: going back is the safe
            // direction and needs no force.
            Event::Rollback { .. } => Ok(self.roll_back_bad(
                Step::Rollback,
                "operator rollback during the health gate",
                now,
            )),
            _ => Err(unexpected),
        }
    }

    /// After the reboot: running the new slot, or the bootloader fell back.
    pub(super) fn booted_into(&mut self, now: UnixSecs) -> Vec<Command> {
        let (State::Rebooting { release, slot } | State::PendingHealth { release, slot, .. }) =
            &self.state
        else {
            return Vec::new();
        };
        let (release, slot) = (release.clone(), *slot);
        if slot == self.facts.booted {
            let deadline = now.saturating_add(self.config.health_timeout_secs);
            let state = State::PendingHealth {
                release,
                slot,
                deadline,
            };
            return self.set(state, vec![Command::RunHealthGate { deadline }]);
        }
        let reason = format!(
            "slot {slot} did not come up; the bootloader fell back to slot {}",
            self.facts.booted
        );
        self.fail(
            Step::Boot,
            &reason,
            true,
            vec![Command::InvalidateSlot { slot }],
            now,
        )
    }

    /// The new system runs but is bad: record it, boot the old slot.
    pub(super) fn roll_back_bad(
        &mut self,
        step: Step,
        reason: &str,
        now: UnixSecs,
    ) -> Vec<Command> {
        let to = self.inactive();
        let rollback = Some(Rollback { to, reboots: 0 });
        let cmds = vec![Command::SwitchBootTarget { slot: to }, Command::Reboot];
        self.fail_with(step, reason, true, rollback, cmds, now)
    }

    pub(super) fn operator_rollback(&mut self, force: bool, now: UnixSecs) -> Handled {
        let to = self.inactive();
        if !self.facts.inactive_bootable {
            return Err(EventError::NothingToRollBackTo { to });
        }
        if !force {
            return Err(EventError::RollbackNeedsForce { to });
        }
        let mut cmds = Vec::new();
        let release = match &self.state {
            State::Good { release, .. } => Some(release.clone()),
            _ => None,
        };
        if let Some(r) = &release {
            let reason = "rolled back by an operator";
            self.history.record_bad(r, reason, now);
            cmds.push(Command::RecordBadRelease {
                version: r.version,
                reason: reason.to_owned(),
            });
            cmds.push(Command::PersistHistory(self.history.clone()));
        }
        cmds.extend([Command::SwitchBootTarget { slot: to }, Command::Reboot]);
        let state = State::Failed {
            release,
            reason: "operator rollback".to_owned(),
            step: Step::Rollback,
            rollback: Some(Rollback { to, reboots: 0 }),
        };
        Ok(self.set(state, cmds))
    }
}

#[cfg(test)]
mod tests;

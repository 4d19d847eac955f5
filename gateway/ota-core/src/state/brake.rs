//! The fleet brake's second look: a written, verified slot is armed only
//! when a brake check ([`Command::CheckBrake`]) clears its release. Paused
//! or yanked by then, the slot is invalidated and the updater goes back
//! to idle (the attempt recorded [`Outcome::Braked`], the refusal
//! reported); the brake unknown (offline, the last verified metadata
//! expired), nothing is applied and the slot stays written, `Staged`, for
//! the next run to check again.

use super::machine::Updater;
use super::{Command, State};
use crate::brake::BrakeCheck;
use crate::history::Outcome;
use crate::release::Refusal;
use crate::UnixSecs;

impl Updater {
    pub(super) fn brake_checked(&mut self, check: &BrakeCheck, now: UnixSecs) -> Vec<Command> {
        let State::Staged { release, slot } = &self.state else {
            return Vec::new();
        };
        let slot = *slot;
        match check.verdict(release.version, &release.variant, now) {
            Ok(()) => {
                self.brake_cleared = true;
                vec![Command::ArmSlot {
                    slot,
                    tries: self.config.boot_tries,
                }]
            }
            Err(refusal @ Refusal::BrakeUnknown { .. }) => {
                self.brake_cleared = false;
                vec![Command::Refused(refusal)]
            }
            Err(refusal) => {
                self.history
                    .finish(Outcome::Braked, Some(&refusal.to_string()), now);
                let cmds = vec![
                    Command::PersistHistory(self.history.clone()),
                    Command::InvalidateSlot { slot },
                    Command::Refused(refusal),
                ];
                self.set(State::Idle, cmds)
            }
        }
    }
}

#[cfg(test)]
mod tests;

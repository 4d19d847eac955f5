//! [`Updater::resume`]: what to do after a restart or a power cut, for a
//! state persisted at any point.
//!
//! | persisted       | boot facts                                   | resumes as |
//! |-----------------|----------------------------------------------|------------|
//! | Idle, Good, Failed | (Good: still on its slot)                 | unchanged, nothing to do |
//! | Good            | running the other slot                       | Idle (something else switched) |
//! | Checking        |                                              | fetch the metadata again |
//! | Downloading     |                                              | re-plan; only chunks not in `have` are fetched |
//! | Writing         |                                              | invalidate and rewrite the inactive slot from byte 0 |
//! | Staged          | slot is not the running one                  | check the brake, then arm it |
//! | Rebooting       | running the new slot                         | PendingHealth, health gate |
//! | Rebooting       | old slot, boot target already the new slot   | reboot again |
//! | Rebooting       | old slot, new slot armed and never tried     | Staged: check the brake, re-arm, switch, reboot |
//! | Rebooting       | old slot, new slot tried (tries used)        | Failed, release recorded bad |
//! | PendingHealth   | new slot, already marked good                | Good |
//! | PendingHealth   | new slot, not marked good                    | health gate again, fresh deadline |
//! | PendingHealth   | old slot (the bootloader fell back)          | Failed, release recorded bad |
//! | Failed + rollback | on the rollback target                     | rollback done |
//! | Failed + rollback | elsewhere, fewer than 2 reboots tried      | switch and reboot again |
//! | Failed + rollback | elsewhere, 2 reboots tried                 | give up, stay, say so |
//! | Staged          | the "new" slot is the running one            | Failed: the state contradicts the boot |
//!
//! A fresh deadline after a reboot into the new slot is safe: every boot of
//! an unaccepted slot spends one of its tries, so the bootloader ends a
//! loop of power cuts during the health gate.

use super::{BootFacts, Command, Rollback, State, UpdaterConfig};
use crate::history::{History, Outcome};
use crate::UnixSecs;

use super::machine::Updater;

/// Reboots tried to reach a rollback target before giving up.
const MAX_ROLLBACK_REBOOTS: u8 = 2;

impl Updater {
    /// Continues from `persisted` given how the system booted. Returns the
    /// updater and the commands to carry out, in order.
    pub fn resume(
        config: UpdaterConfig,
        persisted: State,
        facts: BootFacts,
        history: History,
        now: UnixSecs,
    ) -> (Updater, Vec<Command>) {
        let mut up = Updater {
            config,
            facts,
            state: persisted,
            history,
            brake_cleared: false,
        };
        let cmds = up.reconcile(now);
        (up, cmds)
    }

    fn reconcile(&mut self, now: UnixSecs) -> Vec<Command> {
        let booted = self.facts.booted;
        match &mut self.state {
            State::Idle | State::Failed { rollback: None, .. } => Vec::new(),
            State::Good { slot, .. } if *slot == booted => Vec::new(),
            State::Good { .. } => self.set(State::Idle, Vec::new()),
            State::Checking => vec![Command::FetchMetadata],
            State::Downloading { release, .. } => vec![Command::PrepareDownload {
                release: release.clone(),
            }],
            State::Writing { release, .. } => {
                let release = release.clone();
                self.start_writing(release)
            }
            // The slot verified and was armed, and the power went before
            // Rebooting was persisted: the bootloader booted the armed slot.
            // That is the reboot the update wanted; its health gate decides.
            State::Staged { release, slot } if *slot == booted => {
                let (release, slot) = (release.clone(), *slot);
                self.state = State::Rebooting { release, slot };
                self.booted_into(now)
            }
            // Time may have passed: the brake is checked again first.
            State::Staged { .. } => vec![Command::CheckBrake],
            State::Rebooting { slot, .. } if *slot == booted => self.booted_into(now),
            State::Rebooting { release, slot } => {
                let (release, slot) = (release.clone(), *slot);
                if slot == self.facts.next_boot {
                    // Switched, but the reboot never happened (the driver
                    // restarted, or the reboot command failed silently).
                    return vec![Command::Reboot];
                }
                if self.facts.inactive_tries_left == Some(self.config.boot_tries) {
                    // Armed and never tried: the switch did not stick.
                    // Staged again: the brake first, then re-arm.
                    return self.set(State::Staged { release, slot }, vec![Command::CheckBrake]);
                }
                // Tried and fell back to the old slot.
                self.booted_into(now)
            }
            State::PendingHealth { release, slot, .. }
                if *slot == booted && self.facts.booted_good =>
            {
                let release = release.clone();
                let slot = *slot;
                self.history.finish(Outcome::Succeeded, None, now);
                self.history.clear_bad(release.version);
                let cmds = vec![Command::PersistHistory(self.history.clone())];
                self.set(State::Good { release, slot }, cmds)
            }
            State::PendingHealth { .. } => self.booted_into(now),
            State::Failed {
                rollback: Some(rb), ..
            } if rb.to == booted => {
                if let State::Failed { rollback, .. } = &mut self.state {
                    *rollback = None;
                }
                self.persist(Vec::new())
            }
            State::Failed {
                reason,
                rollback: Some(rb),
                ..
            } => {
                if rb.reboots >= MAX_ROLLBACK_REBOOTS {
                    reason.push_str(&format!(
                        "; slot {} did not boot after {} rollback reboots, staying on slot {booted}",
                        rb.to, rb.reboots
                    ));
                    if let State::Failed { rollback, .. } = &mut self.state {
                        *rollback = None;
                    }
                    return self.persist(Vec::new());
                }
                let to = rb.to;
                *rb = Rollback {
                    to,
                    reboots: rb.reboots + 1,
                };
                self.persist(vec![
                    Command::SwitchBootTarget { slot: to },
                    Command::Reboot,
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Whether a boot is accepted: what `nusactl update boot` (run at every
//! boot, before `boot-complete.target`) makes of the running system once
//! the resume's work for this boot is done.
//!
//! The protocol, driven by the runner's `boot`:
//! 1. [`Event::BootStarted`], before anything the resume queued runs. A
//!    transfer (check, download, write, arming the other slot) a power cut
//!    interrupted is the timer's run to continue (niced, idle I/O, with
//!    the network), not the gate's, which would hold `boot-complete.target`
//!    for the length of a slot write: the boot is confirmed and ends as
//!    [`BootVerdict::TransferLeft`]. The transfer targets the other slot,
//!    so this one is the accepted one, and a bootloader that counts every
//!    boot must hear so, or a download spread over several boots would
//!    spend the working slot's retries.
//! 2. Otherwise the resume's commands run (the health gate of a slot on
//!    trial, a rollback reboot); a reboot ends the run there.
//! 3. [`Event::BootSettled`]: a boot the updater accepts is confirmed
//!    ([`Command::ConfirmBoot`], answered by [`Event::BootConfirmed`]):
//!    nothing on trial, the new release good on its slot, or back on the
//!    old release after an update failed (never on the failed one).
//! 4. [`Command::EndBoot`] with the verdict. Back on a good slot after an
//!    update failed (rolled back, or never armed), the failure is the
//!    update's and stays reported (status, metrics, history); this boot is
//!    not the one that failed, so the gate passes
//!    ([`BootVerdict::GoodAfterFailure`]).
//!
//! None of these events changes the state or the history.

use super::machine::Updater;
use super::{Command, Event, State};

/// What the boot-time run makes of this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootVerdict {
    /// A transfer a power cut interrupted is left to the timer's run; this
    /// boot is accepted.
    TransferLeft,
    /// Back on a good slot after an update failed: the failure stays
    /// reported, this boot passes.
    GoodAfterFailure,
    /// The state tells the rest: accepted when nothing is on trial or the
    /// new release is good; a failed update on the running slot fails it.
    Settled,
}

impl Updater {
    /// The boot events; `None` for any other event.
    pub(super) fn boot_acceptance(&self, event: &Event) -> Option<Vec<Command>> {
        let confirm = Command::ConfirmBoot {
            slot: self.facts.booted,
        };
        let cmds = match event {
            Event::BootStarted if self.transfer_interrupted() => vec![confirm],
            Event::BootStarted => Vec::new(),
            Event::BootSettled if self.boot_accepted() => vec![confirm],
            Event::BootSettled => vec![Command::EndBoot(self.verdict(false))],
            Event::BootConfirmed { .. } if self.transfer_interrupted() => {
                vec![Command::EndBoot(BootVerdict::TransferLeft)]
            }
            Event::BootConfirmed { wrote } => {
                vec![Command::EndBoot(
                    self.verdict(*wrote && self.boot_accepted()),
                )]
            }
            _ => return None,
        };
        Some(cmds)
    }

    /// A transfer toward the other slot is under way.
    fn transfer_interrupted(&self) -> bool {
        matches!(
            self.state,
            State::Checking
                | State::Downloading { .. }
                | State::Writing { .. }
                | State::Staged { .. }
        )
    }

    /// Nothing on trial, the new release good on the running slot, or back
    /// on the old release after an update failed (never on the failed one).
    fn boot_accepted(&self) -> bool {
        let running = self.facts.running.version;
        match &self.state {
            State::Idle => true,
            State::Good { slot, .. } => *slot == self.facts.booted,
            State::Failed {
                release,
                rollback: None,
                ..
            } => release.as_ref().is_none_or(|r| r.version != running),
            _ => false,
        }
    }

    /// `confirmed`: the bootloader was told just now that the boot is good.
    fn verdict(&self, confirmed: bool) -> BootVerdict {
        let failed = matches!(self.state, State::Failed { rollback: None, .. });
        if failed && (self.facts.booted_good || confirmed) {
            BootVerdict::GoodAfterFailure
        } else {
            BootVerdict::Settled
        }
    }
}

#[cfg(test)]
mod tests;

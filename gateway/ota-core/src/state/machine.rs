//! [`Updater::handle`]: one event in, the commands out. The handlers of
//! the busy states are in `transfer.rs` (download, write) and `boot.rs`
//! (reboot, health gate, rollback); whether a boot is accepted, in any
//! state, in `accept.rs`.

use super::{BootFacts, Command, Event, EventError, Rollback, Slot, State, Step, UpdaterConfig};
use crate::history::{History, Outcome};
use crate::release::{admit, ReleaseInfo};
use crate::UnixSecs;

pub(super) type Handled = Result<Vec<Command>, EventError>;

/// The updater: config, what the running system is, the state and the
/// history. Pure: every call that depends on time takes `now`.
#[derive(Debug, Clone)]
pub struct Updater {
    pub(super) config: UpdaterConfig,
    pub(super) facts: BootFacts,
    pub(super) state: State,
    pub(super) history: History,
    /// A brake check cleared the staged release since the last resume or
    /// state change: only then is `SlotArmed` taken. Never persisted: after
    /// a restart the brake is checked again.
    pub(super) brake_cleared: bool,
}

impl Updater {
    /// A fresh updater, idle (first boot, or no persisted state).
    pub fn new(config: UpdaterConfig, facts: BootFacts, history: History) -> Self {
        Self {
            config,
            facts,
            state: State::Idle,
            history,
            brake_cleared: false,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn facts(&self) -> &BootFacts {
        &self.facts
    }

    /// The running slot; never written.
    pub fn active(&self) -> Slot {
        self.facts.booted
    }

    /// The slot updates are written to.
    pub fn inactive(&self) -> Slot {
        self.facts.booted.other()
    }

    /// Acts on `event` at `now` (unix seconds). On `Err` nothing changed.
    pub fn handle(&mut self, event: Event, now: UnixSecs) -> Result<Vec<Command>, EventError> {
        let unexpected = EventError::Unexpected {
            event: event.name(),
            state: self.state.name(),
        };
        if let Some(cmds) = self.boot_acceptance(&event) {
            return Ok(cmds);
        }
        match (&mut self.state, event) {
            (State::Idle | State::Good { .. }, Event::CheckRequested | Event::Wake)
            | (State::Failed { rollback: None, .. }, Event::CheckRequested | Event::Wake) => {
                Ok(self.set(State::Checking, vec![Command::FetchMetadata]))
            }
            (State::Idle | State::Good { .. }, Event::InstallRequested { release, force })
            | (State::Failed { rollback: None, .. }, Event::InstallRequested { release, force }) => {
                admit(&release, &self.facts.running, self.history.bad_set(), force)
                    .map_err(EventError::Refused)?;
                Ok(self.start(release, force, now))
            }
            (State::Idle | State::Good { .. }, Event::Rollback { force })
            | (State::Failed { rollback: None, .. }, Event::Rollback { force }) => {
                self.operator_rollback(force, now)
            }
            (State::Checking, Event::CheckRequested) => Ok(Vec::new()),
            (State::Checking, Event::NoUpdate) => Ok(self.set(State::Idle, Vec::new())),
            (State::Checking, Event::ReleaseFound { release, brake }) => {
                Ok(self.found(release, &brake, now))
            }
            (State::Checking, Event::Abandon) => Ok(self.set(State::Idle, Vec::new())),
            (State::Checking, Event::Error { step, reason }) => {
                let failed = State::Failed {
                    release: None,
                    reason,
                    step,
                    rollback: None,
                };
                Ok(self.set(failed, Vec::new()))
            }
            (State::Downloading { .. }, event) => self.downloading(event, now, unexpected),
            (State::Writing { .. }, event) => self.writing(event, now, unexpected),
            (State::Staged { .. }, Event::BrakeChecked(check)) => {
                Ok(self.brake_checked(&check, now))
            }
            // Armed only after a brake check cleared the release.
            (State::Staged { release, slot }, Event::SlotArmed) if self.brake_cleared => {
                let (release, slot) = (release.clone(), *slot);
                let cmds = vec![Command::SwitchBootTarget { slot }, Command::Reboot];
                Ok(self.set(State::Rebooting { release, slot }, cmds))
            }
            (State::Staged { slot, .. }, Event::Error { step, reason }) => {
                let cmds = vec![Command::InvalidateSlot { slot: *slot }];
                Ok(self.fail(step, &reason, false, cmds, now))
            }
            (State::Staged { slot, .. }, Event::Abandon) => {
                let cmds = vec![Command::InvalidateSlot { slot: *slot }];
                Ok(self.abandon(cmds, now))
            }
            (State::Rebooting { .. }, Event::RebootIssued) => Ok(Vec::new()),
            (State::Rebooting { .. }, Event::BootedInto { slot, .. }) => {
                if slot != self.facts.booted {
                    return Err(EventError::BootContradiction {
                        reported: slot,
                        facts: self.facts.booted,
                    });
                }
                Ok(self.booted_into(now))
            }
            (State::Rebooting { slot, .. }, Event::Error { step, reason }) => {
                let slot = *slot;
                let cmds = vec![
                    Command::SwitchBootTarget {
                        slot: self.active(),
                    },
                    Command::InvalidateSlot { slot },
                ];
                Ok(self.fail(step, &reason, false, cmds, now))
            }
            (State::Rebooting { slot, .. }, Event::Abandon) => {
                let slot = *slot;
                let cmds = vec![
                    Command::SwitchBootTarget {
                        slot: self.active(),
                    },
                    Command::InvalidateSlot { slot },
                ];
                Ok(self.abandon(cmds, now))
            }
            (State::PendingHealth { .. }, event) => self.pending_health(event, now, unexpected),
            (
                State::Failed {
                    rollback: Some(_), ..
                },
                Event::RebootIssued,
            ) => Ok(Vec::new()),
            (
                State::Failed {
                    reason,
                    rollback: rb @ Some(_),
                    ..
                },
                Event::Error { step, reason: why },
            ) => {
                *rb = None;
                reason.push_str(&format!("; rollback failed at {step:?}: {why}"));
                Ok(self.persist(Vec::new()))
            }
            _ => Err(unexpected),
        }
    }

    /// Ends the attempt as failed; `bad` records the release bad too.
    pub(super) fn fail(
        &mut self,
        step: Step,
        reason: &str,
        bad: bool,
        after: Vec<Command>,
        now: UnixSecs,
    ) -> Vec<Command> {
        self.fail_with(step, reason, bad, None, after, now)
    }

    pub(super) fn fail_with(
        &mut self,
        step: Step,
        reason: &str,
        bad: bool,
        rollback: Option<Rollback>,
        after: Vec<Command>,
        now: UnixSecs,
    ) -> Vec<Command> {
        let release = current_release(&self.state);
        self.history
            .finish(Outcome::Failed { step }, Some(reason), now);
        let mut cmds = Vec::new();
        if let (true, Some(r)) = (bad, &release) {
            self.history.record_bad(r, reason, now);
            cmds.push(Command::RecordBadRelease {
                version: r.version,
                reason: reason.to_owned(),
            });
        }
        cmds.push(Command::PersistHistory(self.history.clone()));
        cmds.extend(after);
        let state = State::Failed {
            release,
            reason: reason.to_owned(),
            step,
            rollback,
        };
        self.set(state, cmds)
    }

    pub(super) fn abandon(&mut self, after: Vec<Command>, now: UnixSecs) -> Vec<Command> {
        self.history
            .finish(Outcome::Abandoned, Some("abandoned"), now);
        let mut cmds = vec![Command::PersistHistory(self.history.clone())];
        cmds.extend(after);
        self.set(State::Idle, cmds)
    }

    /// Moves to `state`: persist it first, then `after`.
    pub(super) fn set(&mut self, state: State, after: Vec<Command>) -> Vec<Command> {
        self.state = state;
        self.brake_cleared = false;
        self.persist(after)
    }

    pub(super) fn persist(&self, after: Vec<Command>) -> Vec<Command> {
        let mut cmds = Vec::with_capacity(after.len() + 1);
        cmds.push(Command::Persist(self.state.clone()));
        cmds.extend(after);
        cmds
    }
}

fn current_release(state: &State) -> Option<ReleaseInfo> {
    match state {
        State::Downloading { release, .. }
        | State::Writing { release, .. }
        | State::Staged { release, .. }
        | State::Rebooting { release, .. }
        | State::PendingHealth { release, .. }
        | State::Good { release, .. } => Some(release.clone()),
        State::Failed { release, .. } => release.clone(),
        State::Idle | State::Checking => None,
    }
}

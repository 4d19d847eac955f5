//! The invariants of the state machine, checked by brute force: every
//! state resumed against every boot situation, then one and two events of
//! every kind. The running slot is never a write target; the boot target
//! moves to a new slot only after `SlotArmed` in `Staged`, and a slot is
//! armed only right after a brake check cleared its release (never on a
//! resume); a release the brake holds is neither started nor armed; a
//! state change is persisted before anything else is done; the boot
//! events change nothing and confirm only an accepted boot of the running
//! slot.

use super::tests::{
    brake_clear, delta_plan, downloading, facts_on_new, found, ok, resume, writing, NOW,
};
use super::{BootFacts, BootVerdict, Command, Event, Rollback, State, Step, Updater};
use crate::testutil::{facts, pausing, release, yanking, RELEASE_LEN};
use crate::{Brake, BrakeCheck, Outcome, Refusal, ReleaseInfo, Slot};

/// The time `check_step` feeds its events at.
const STEP_NOW: u64 = NOW + 10_000;

const A: Slot = Slot::A;
const B: Slot = Slot::B;

/// Fails with the commands if any names the running slot as a write target.
fn assert_active_untouched(active: Slot, cmds: &[Command], context: &str) {
    for c in cmds {
        let target = match c {
            Command::InvalidateSlot { slot }
            | Command::WriteSlot { slot, .. }
            | Command::VerifyImage { slot }
            | Command::ArmSlot { slot, .. } => Some(*slot),
            _ => None,
        };
        assert_ne!(
            target,
            Some(active),
            "{context}: {c:?} targets the running slot"
        );
    }
}

fn rel() -> ReleaseInfo {
    release("1.5.0")
}

pub(super) fn every_state() -> Vec<State> {
    let mut partial = downloading();
    ok(&mut partial, Event::DownloadPlanned(delta_plan()));
    ok(&mut partial, Event::DownloadProgress { first: 2, count: 1 });
    let failed = |rollback| State::Failed {
        release: Some(rel()),
        reason: "x".into(),
        step: Step::Health,
        rollback,
    };
    let mut states = vec![
        State::Idle,
        State::Checking,
        downloading().state().clone(),
        partial.state().clone(),
        writing().state().clone(),
        State::Writing {
            release: rel(),
            bytes_written: 500,
        },
        failed(None),
        State::Failed {
            release: None,
            reason: "x".into(),
            step: Step::Check,
            rollback: None,
        },
    ];
    for slot in [A, B] {
        states.push(State::Staged {
            release: rel(),
            slot,
        });
        states.push(State::Rebooting {
            release: rel(),
            slot,
        });
        states.push(State::PendingHealth {
            release: rel(),
            slot,
            deadline: NOW - 5,
        });
        states.push(State::Good {
            release: rel(),
            slot,
        });
        for reboots in [0, 2] {
            states.push(failed(Some(Rollback { to: slot, reboots })));
        }
    }
    states
}

pub(super) fn every_boot() -> Vec<BootFacts> {
    let mut all = Vec::new();
    for booted in [A, B] {
        for next_boot in [A, B] {
            for booted_good in [false, true] {
                for inactive_tries_left in [None, Some(0), Some(3)] {
                    for inactive_bootable in [false, true] {
                        let version = if booted == B { "1.5.0" } else { "1.4.2" };
                        all.push(BootFacts {
                            next_boot,
                            booted_good,
                            inactive_tries_left,
                            inactive_bootable,
                            ..facts(booted, version)
                        });
                    }
                }
            }
        }
    }
    all
}

fn every_event() -> Vec<Event> {
    let mut wrong = rel();
    wrong.image_sha256 = crate::Sha256Digest::of(b"other");
    vec![
        Event::CheckRequested,
        Event::Wake,
        found(release("1.6.0")),
        Event::ReleaseFound {
            release: release("1.6.0"),
            brake: pausing("1.6.0"),
        },
        brake_clear(),
        Event::BrakeChecked(BrakeCheck::Fresh(pausing("1.5.0"))),
        Event::BrakeChecked(BrakeCheck::Fresh(yanking("1.5.0"))),
        // Offline: the last verified metadata still valid, or expired.
        Event::BrakeChecked(BrakeCheck::Stale {
            brake: Brake::default(),
            expires: NOW + 20_000,
            error: "offline".into(),
        }),
        Event::BrakeChecked(BrakeCheck::Stale {
            brake: Brake::default(),
            expires: NOW,
            error: "offline".into(),
        }),
        Event::BrakeChecked(BrakeCheck::Stale {
            brake: pausing("1.5.0"),
            expires: NOW + 20_000,
            error: "offline".into(),
        }),
        Event::BrakeChecked(BrakeCheck::Unknown {
            error: "offline".into(),
        }),
        Event::NoUpdate,
        Event::InstallRequested {
            release: release("1.3.0"),
            force: true,
        },
        Event::InstallRequested {
            release: release("1.3.0"),
            force: false,
        },
        Event::DownloadPlanned(delta_plan()),
        Event::DownloadProgress {
            first: 0,
            count: 11,
        },
        Event::DownloadProgress {
            first: 11,
            count: 1,
        },
        Event::DownloadDone,
        Event::WriteProgress {
            bytes_written: RELEASE_LEN as u64,
        },
        Event::WriteProgress { bytes_written: 7 },
        Event::WriteVerified {
            sha256: rel().image_sha256,
        },
        Event::WriteVerified {
            sha256: wrong.image_sha256,
        },
        Event::SlotArmed,
        Event::RebootIssued,
        Event::BootedInto {
            slot: A,
            tries_left: None,
        },
        Event::BootedInto {
            slot: B,
            tries_left: Some(2),
        },
        Event::HealthPassed,
        Event::HealthFailed("gate".into()),
        Event::HealthDeadlinePassed,
        Event::SlotMarkedGood,
        Event::Error {
            step: Step::Download,
            reason: "e".into(),
        },
        Event::Error {
            step: Step::SwitchBoot,
            reason: "e".into(),
        },
        Event::Abandon,
        Event::MarkGood,
        Event::Rollback { force: false },
        Event::Rollback { force: true },
        Event::BootStarted,
        Event::BootSettled,
        Event::BootConfirmed { wrote: false },
        Event::BootConfirmed { wrote: true },
    ]
}

/// The boot events change neither the state nor the history, persist
/// nothing, and confirm only the running slot's boot, only when it is
/// accepted: never while a release on it is on trial or a reboot is
/// pending, never when the state records the running release as failed.
fn assert_boot_event_keeps_the_rules(
    before: &Updater,
    event: &Event,
    after: &Updater,
    cmds: &[Command],
    ctx: &str,
) {
    if !matches!(
        event,
        Event::BootStarted | Event::BootSettled | Event::BootConfirmed { .. }
    ) {
        return;
    }
    assert_eq!(after.state(), before.state(), "{ctx}");
    assert_eq!(after.history(), before.history(), "{ctx}");
    let facts = before.facts();
    let may_confirm = match before.state() {
        State::Idle
        | State::Checking
        | State::Downloading { .. }
        | State::Writing { .. }
        | State::Staged { .. } => true,
        State::Good { slot, .. } => *slot == facts.booted,
        State::Failed {
            release,
            rollback: None,
            ..
        } => release
            .as_ref()
            .is_none_or(|r| r.version != facts.running.version),
        State::Rebooting { .. } | State::PendingHealth { .. } | State::Failed { .. } => false,
    };
    for c in cmds {
        match c {
            Command::ConfirmBoot { slot } => {
                assert_eq!(*slot, facts.booted, "{ctx}: confirms another slot");
                assert!(may_confirm, "{ctx}: confirms a boot it does not accept");
            }
            Command::EndBoot(BootVerdict::GoodAfterFailure) => assert!(
                matches!(before.state(), State::Failed { rollback: None, .. }),
                "{ctx}: good after which failure?"
            ),
            Command::EndBoot(BootVerdict::TransferLeft) => assert!(
                may_confirm
                    && !matches!(
                        before.state(),
                        State::Idle | State::Good { .. } | State::Failed { .. }
                    ),
                "{ctx}: left which transfer?"
            ),
            Command::EndBoot(BootVerdict::Settled) => {}
            other => panic!("{ctx}: a boot event asked for {other:?}"),
        }
    }
}

/// A switch of the boot target toward a slot other than the running one
/// is either the step after arming a verified slot, or a rollback to the
/// old system.
fn assert_switch_is_earned(
    before: &State,
    cleared: bool,
    event: Option<&Event>,
    up: &Updater,
    cmds: &[Command],
    ctx: &str,
) {
    let active = up.active();
    for c in cmds {
        let Command::SwitchBootTarget { slot } = c else {
            continue;
        };
        if *slot == active {
            continue;
        }
        let armed = cleared
            && matches!((before, event), (State::Staged { slot: s, .. }, Some(Event::SlotArmed)) if s == slot);
        let rollback =
            matches!(up.state(), State::Failed { rollback: Some(rb), .. } if rb.to == *slot);
        assert!(
            armed || rollback,
            "{ctx}: switch to {slot} from {before:?} -> {:?}",
            up.state()
        );
    }
}

/// `ArmSlot` only as the answer to a brake check that cleared the staged
/// release: never on a resume, never after another event.
fn assert_arm_is_cleared(before: &State, event: Option<&Event>, cmds: &[Command], ctx: &str) {
    if !cmds.iter().any(|c| matches!(c, Command::ArmSlot { .. })) {
        return;
    }
    let cleared = match (before, event) {
        (State::Staged { release, .. }, Some(Event::BrakeChecked(check))) => check
            .verdict(release.version, &release.variant, STEP_NOW)
            .is_ok(),
        _ => false,
    };
    assert!(
        cleared,
        "{ctx}: armed without a brake check clearing it: {cmds:?}"
    );
}

/// A release the brake holds is not started (check time) and not armed
/// (before the reboot): paused or yanked, the staged slot is invalidated,
/// the open attempt closed as braked and the updater idle; the brake
/// unknown, it stays staged.
fn assert_brake_holds(
    before: &Updater,
    event: &Event,
    after: &Updater,
    cmds: &[Command],
    ctx: &str,
) {
    match (before.state(), event) {
        (State::Checking, Event::ReleaseFound { release, brake }) => {
            if let Some(refusal) = brake.holds(release.version, &release.variant) {
                assert_eq!(after.state(), &State::Idle, "{ctx}");
                assert!(cmds.contains(&Command::Refused(refusal)), "{ctx}: {cmds:?}");
                assert!(
                    !cmds
                        .iter()
                        .any(|c| matches!(c, Command::PrepareDownload { .. })),
                    "{ctx}: {cmds:?}"
                );
            }
        }
        (State::Staged { release, slot }, Event::BrakeChecked(check)) => {
            match check.verdict(release.version, &release.variant, STEP_NOW) {
                Ok(()) => assert!(after.brake_cleared, "{ctx}"),
                Err(Refusal::BrakeUnknown { .. }) => {
                    assert_eq!(after.state(), before.state(), "{ctx}");
                    assert_eq!(after.history(), before.history(), "{ctx}");
                    assert!(!after.brake_cleared, "{ctx}");
                }
                Err(refusal) => {
                    assert_eq!(after.state(), &State::Idle, "{ctx}");
                    assert!(
                        cmds.contains(&Command::InvalidateSlot { slot: *slot }),
                        "{ctx}: {cmds:?}"
                    );
                    assert!(cmds.contains(&Command::Refused(refusal)), "{ctx}");
                    let open = before
                        .history()
                        .last_attempt()
                        .is_some_and(|a| a.outcome == Outcome::InProgress);
                    if open {
                        assert_eq!(
                            after.history().last_attempt().map(|a| a.outcome),
                            Some(Outcome::Braked),
                            "{ctx}"
                        );
                    }
                }
            }
        }
        _ => {}
    }
}

#[test]
fn resume_then_any_event_never_writes_the_running_slot() {
    let events = every_event();
    for state in every_state() {
        for facts in every_boot() {
            let ctx = format!("{} on {:?}", state.name(), facts);
            let (up, cmds) = resume(state.clone(), facts.clone());
            assert_active_untouched(facts.booted, &cmds, &ctx);
            assert_switch_is_earned(&state, false, None, &up, &cmds, &ctx);
            assert_arm_is_cleared(&state, None, &cmds, &ctx);
            assert!(!up.brake_cleared, "{ctx}: a resume clears nothing");
            if up.state() != &state {
                assert_eq!(
                    cmds.first(),
                    Some(&Command::Persist(up.state().clone())),
                    "{ctx}"
                );
            }
            match up.state() {
                State::Staged { slot, .. } | State::Rebooting { slot, .. } => {
                    assert_ne!(*slot, facts.booted, "{ctx}")
                }
                State::PendingHealth { slot, deadline, .. } => {
                    assert_eq!(*slot, facts.booted, "{ctx}");
                    assert!(*deadline > NOW, "{ctx}: a resumed gate gets time");
                }
                State::Writing { bytes_written, .. } => {
                    assert_eq!(*bytes_written, 0, "{ctx}");
                    assert!(cmds.contains(&Command::WriteSlot {
                        slot: facts.booted.other(),
                        release: rel()
                    }));
                }
                State::Downloading { release, .. } => {
                    assert_eq!(
                        cmds,
                        vec![Command::PrepareDownload {
                            release: release.clone()
                        }],
                        "{ctx}"
                    )
                }
                _ => {}
            }
            for event in &events {
                check_step(&up, event, &ctx);
            }
        }
    }
}

/// Feeds `event`; checks the invariants and returns the updater after it.
fn check_step(up: &Updater, event: &Event, ctx: &str) -> Option<Updater> {
    let mut next = up.clone();
    let before = up.state().clone();
    let ctx = format!("{ctx} + {}", event.name());
    match next.handle(event.clone(), STEP_NOW) {
        Err(_) => {
            assert_eq!(next.state(), up.state(), "{ctx}");
            assert_eq!(next.history(), up.history(), "{ctx}");
            None
        }
        Ok(cmds) => {
            assert_active_untouched(up.active(), &cmds, &ctx);
            assert_switch_is_earned(&before, up.brake_cleared, Some(event), &next, &cmds, &ctx);
            assert_arm_is_cleared(&before, Some(event), &cmds, &ctx);
            assert_brake_holds(up, event, &next, &cmds, &ctx);
            assert_boot_event_keeps_the_rules(up, event, &next, &cmds, &ctx);
            // Write progress alone is not persisted: a power cut restarts
            // the write anyway.
            let write_progress = matches!(
                (&before, next.state()),
                (State::Writing { .. }, State::Writing { .. })
            );
            if next.state() != &before && !write_progress {
                assert_eq!(
                    cmds.first(),
                    Some(&Command::Persist(next.state().clone())),
                    "{ctx}"
                );
            }
            Some(next)
        }
    }
}

#[test]
fn two_events_in_a_row_keep_the_invariants() {
    let events = every_event();
    let boots = [
        facts(A, "1.4.2"),
        facts_on_new(),
        BootFacts {
            next_boot: B,
            inactive_tries_left: Some(3),
            ..facts(A, "1.4.2")
        },
        BootFacts {
            inactive_tries_left: Some(0),
            inactive_bootable: false,
            ..facts(A, "1.4.2")
        },
    ];
    let mut reached = std::collections::HashSet::new();
    for state in every_state() {
        for facts in &boots {
            let (up, _) = resume(state.clone(), facts.clone());
            for first in &events {
                let ctx = format!("{} on {:?}", state.name(), facts.booted);
                let Some(mid) = check_step(&up, first, &ctx) else {
                    continue;
                };
                reached.insert(mid.state().name());
                for second in &events {
                    if let Some(end) =
                        check_step(&mid, second, &format!("{ctx} + {}", first.name()))
                    {
                        reached.insert(end.state().name());
                    }
                }
            }
        }
    }
    assert_eq!(reached.len(), 9, "every state is reached: {reached:?}");
}

#[test]
fn every_state_survives_its_persisted_form() {
    for state in every_state() {
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(
            serde_json::from_str::<State>(&json).unwrap(),
            state,
            "{json}"
        );
    }
}

#[test]
fn an_update_may_start_exactly_where_a_check_is_taken() {
    for state in every_state() {
        for facts in every_boot() {
            let (up, _) = resume(state.clone(), facts);
            let mut next = up.clone();
            let taken = next.handle(Event::CheckRequested, NOW).is_ok()
                && next.state() == &State::Checking
                && up.state() != &State::Checking;
            assert_eq!(
                up.state().update_may_start(),
                taken,
                "{}",
                up.state().name()
            );
        }
    }
}

//! The boot acceptance protocol, against the policy `nusactl update boot`
//! carried before it moved here, over every state and boot situation.

use std::collections::VecDeque;

use super::BootVerdict;
use crate::history::History;
use crate::state::invariants::{every_boot, every_state};
use crate::state::tests::NOW;
use crate::state::{BootFacts, Command, Event, State, Step, Updater, UpdaterConfig};
use crate::testutil::{facts, release};
use crate::Slot;

fn updater(state: State, facts: BootFacts) -> Updater {
    Updater {
        config: UpdaterConfig::default(),
        facts,
        state,
        history: History::new(),
        brake_cleared: false,
    }
}

/// Feeds `event` and answers every `ConfirmBoot` with `wrote`, as the
/// runner does. Returns whether the boot was confirmed, and the verdict.
fn run(up: &mut Updater, event: Event, wrote: bool) -> (bool, Option<BootVerdict>) {
    let mut queue: VecDeque<Command> = up.handle(event, NOW).unwrap().into();
    let mut confirmed = false;
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            Command::ConfirmBoot { slot } => {
                assert_eq!(slot, up.facts().booted);
                assert!(!confirmed, "confirmed twice");
                confirmed = true;
                queue.extend(up.handle(Event::BootConfirmed { wrote }, NOW).unwrap());
            }
            Command::EndBoot(v) => {
                assert!(queue.is_empty(), "commands after the verdict: {queue:?}");
                return (confirmed, Some(v));
            }
            other => panic!("{other:?}"),
        }
    }
    (confirmed, None)
}

/// What `nusactl update boot` decided before the decision moved into the
/// core (`Stopped::Reboot` aside: the runner never settles a boot that
/// asked for a reboot). At start: whether the boot leaves a transfer to
/// the timer's run. Once settled: (confirm the boot, this boot is good
/// although the update failed).
fn transfer_before(state: &State) -> bool {
    matches!(
        state,
        State::Checking | State::Downloading { .. } | State::Writing { .. } | State::Staged { .. }
    )
}

fn settled_before(state: &State, facts: &BootFacts, wrote: bool) -> (bool, bool) {
    let running = &facts.running.version;
    let accepted = match state {
        State::Idle => true,
        State::Good { slot, .. } => *slot == facts.booted,
        State::Failed {
            release,
            rollback: None,
            ..
        } => release.as_ref().is_none_or(|r| &r.version != running),
        _ => false,
    };
    let confirmed = accepted && wrote;
    let good =
        (facts.booted_good || confirmed) && matches!(state, State::Failed { rollback: None, .. });
    (accepted, good)
}

#[test]
fn the_boot_decision_is_the_one_nusactl_made() {
    let mut states = every_state();
    // The failed release running (a rollback that gave up), and an update
    // that failed before it touched a slot.
    states.push(State::Failed {
        release: Some(release("1.4.2")),
        reason: "x".into(),
        step: Step::Health,
        rollback: None,
    });
    for state in states {
        for facts in every_boot() {
            for wrote in [false, true] {
                let ctx = format!("{state:?} on {facts:?}, wrote {wrote}");
                let mut up = updater(state.clone(), facts.clone());
                let started = run(&mut up, Event::BootStarted, wrote);
                if transfer_before(&state) {
                    assert_eq!(started, (true, Some(BootVerdict::TransferLeft)), "{ctx}");
                } else {
                    assert_eq!(started, (false, None), "{ctx}");
                }
                let (confirmed, verdict) = run(&mut up, Event::BootSettled, wrote);
                let (accepted, good) = settled_before(&state, &facts, wrote);
                assert_eq!(confirmed, accepted, "{ctx}");
                let want = if good {
                    BootVerdict::GoodAfterFailure
                } else {
                    BootVerdict::Settled
                };
                assert_eq!(verdict, Some(want), "{ctx}");
                assert_eq!(up.state(), &state, "{ctx}");
            }
        }
    }
}

#[test]
fn an_interrupted_download_is_left_to_the_timer_and_the_boot_confirmed() {
    let mut up = updater(State::Checking, facts(Slot::A, "1.4.2"));
    assert_eq!(
        up.handle(Event::BootStarted, NOW).unwrap(),
        [Command::ConfirmBoot { slot: Slot::A }]
    );
    assert_eq!(
        up.handle(Event::BootConfirmed { wrote: true }, NOW)
            .unwrap(),
        [Command::EndBoot(BootVerdict::TransferLeft)]
    );
}

#[test]
fn a_slot_on_trial_is_not_confirmed_before_its_gate() {
    let state = State::PendingHealth {
        release: release("1.5.0"),
        slot: Slot::B,
        deadline: NOW + 300,
    };
    let mut up = updater(
        state,
        BootFacts {
            booted_good: false,
            ..facts(Slot::B, "1.5.0")
        },
    );
    assert!(up.handle(Event::BootStarted, NOW).unwrap().is_empty());
    assert_eq!(
        up.handle(Event::BootSettled, NOW).unwrap(),
        [Command::EndBoot(BootVerdict::Settled)]
    );
}

#[test]
fn back_on_the_old_slot_after_a_failure_the_boot_is_good() {
    let state = State::Failed {
        release: Some(release("1.5.0")),
        reason: "health gate".into(),
        step: Step::Health,
        rollback: None,
    };
    // Jetson's UEFI counts this boot too: confirming it is what makes it good.
    let mut up = updater(
        state,
        BootFacts {
            booted_good: false,
            ..facts(Slot::A, "1.4.2")
        },
    );
    assert_eq!(
        up.handle(Event::BootSettled, NOW).unwrap(),
        [Command::ConfirmBoot { slot: Slot::A }]
    );
    assert_eq!(
        up.handle(Event::BootConfirmed { wrote: true }, NOW)
            .unwrap(),
        [Command::EndBoot(BootVerdict::GoodAfterFailure)]
    );
    // Nothing confirmed and the slot not good: the failure fails the boot.
    assert_eq!(
        up.handle(Event::BootConfirmed { wrote: false }, NOW)
            .unwrap(),
        [Command::EndBoot(BootVerdict::Settled)]
    );
}

//! Staged, Rebooting, the health gate, rollbacks and bad releases.

use crate::release::Refusal;
use crate::state::tests::*;
use crate::state::{Command, Event, EventError, Rollback, Slot, State, Step, Updater};
use crate::testutil::{facts, release, v};

#[test]
fn staged_and_rebooting_errors_and_abandon_undo_the_boot_changes() {
    for event in [
        Event::Error {
            step: Step::Arm,
            reason: "efivars".into(),
        },
        Event::Abandon,
    ] {
        let mut up = staged();
        let c = ok(&mut up, event);
        assert_eq!(
            after_persist(&up, c),
            vec![Command::InvalidateSlot { slot: B }]
        );
    }
    for event in [
        Event::Error {
            step: Step::SwitchBoot,
            reason: "efivars".into(),
        },
        Event::Abandon,
    ] {
        let mut up = rebooting();
        let c = ok(&mut up, event);
        let want = vec![
            Command::SwitchBootTarget { slot: Slot::A },
            Command::InvalidateSlot { slot: B },
        ];
        assert_eq!(after_persist(&up, c), want);
    }
    let mut up = rebooting();
    let err = up
        .handle(
            Event::BootedInto {
                slot: B,
                tries_left: Some(2),
            },
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        err,
        EventError::BootContradiction {
            reported: B,
            facts: Slot::A
        }
    );
}

fn assert_rolled_back_bad(up: &Updater, c: Vec<Command>, step: Step) {
    let State::Failed {
        step: s, rollback, ..
    } = up.state()
    else {
        panic!("{:?}", up.state())
    };
    assert_eq!(
        (*s, *rollback),
        (
            step,
            Some(Rollback {
                to: Slot::A,
                reboots: 0
            })
        )
    );
    let c = after_persist(up, c);
    assert!(matches!(c[0], Command::RecordBadRelease { version, .. } if version == v("1.5.0")));
    assert_eq!(
        c[1..],
        [Command::SwitchBootTarget { slot: Slot::A }, Command::Reboot]
    );
    assert!(up.history().bad(v("1.5.0")).is_some());
}

#[test]
fn pending_health_failures_roll_back_and_record_the_release_bad() {
    let mut up = pending();
    let c = ok(
        &mut up,
        Event::HealthFailed("model demo failed to load".into()),
    );
    assert_rolled_back_bad(&up, c, Step::Health);

    let mut up = pending();
    let State::PendingHealth { deadline, .. } = *up.state() else {
        panic!()
    };
    let err = up
        .handle(Event::HealthDeadlinePassed, deadline - 1)
        .unwrap_err();
    assert_eq!(
        err,
        EventError::DeadlineNotReached {
            deadline,
            now: deadline - 1
        }
    );
    let c = up.handle(Event::HealthDeadlinePassed, deadline).unwrap();
    assert_rolled_back_bad(&up, c, Step::Health);

    let mut up = pending();
    let c = ok(
        &mut up,
        Event::Error {
            step: Step::MarkGood,
            reason: "efivarfs read-only".into(),
        },
    );
    assert_rolled_back_bad(&up, c, Step::MarkGood);

    let mut up = pending();
    let c = ok(&mut up, Event::Rollback { force: false });
    assert_rolled_back_bad(&up, c, Step::Rollback);

    let mut up = pending();
    assert_eq!(
        ok(&mut up, Event::MarkGood),
        vec![Command::MarkSlotGood { slot: B }]
    );
    let err = up.handle(Event::Abandon, NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Abandon is not expected in state PendingHealth"
    );
}

#[test]
fn rollback_errors_end_the_rollback_and_say_so() {
    let mut up = pending();
    ok(&mut up, Event::HealthFailed("x".into()));
    assert_eq!(ok(&mut up, Event::RebootIssued), vec![]);
    ok(
        &mut up,
        Event::Error {
            step: Step::Reboot,
            reason: "systemctl reboot failed".into(),
        },
    );
    let State::Failed {
        rollback: None,
        reason,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert!(
        reason.ends_with("; rollback failed at Reboot: systemctl reboot failed"),
        "{reason}"
    );
}

#[test]
fn a_bad_release_is_not_retried_unless_forced() {
    let mut up = pending();
    ok(&mut up, Event::HealthFailed("x".into()));
    // Back on the old slot after the rollback reboot.
    let state = up.state().clone();
    let (mut up, _) = Updater::resume(
        up.config.clone(),
        state,
        facts(Slot::A, "1.4.2"),
        up.history().clone(),
        NOW,
    );
    for _ in 0..3 {
        let c = refused_on_check(&mut up, release("1.5.0"));
        assert!(
            matches!(&c[..], [Command::Refused(Refusal::RecordedBad { .. })]),
            "{c:?}"
        );
    }
    // The next release is taken as usual.
    ok(&mut up, Event::CheckRequested);
    ok(&mut up, found(release("1.5.1")));
    assert!(
        matches!(up.state(), State::Downloading { release, .. } if release.version == v("1.5.1"))
    );

    // Forced, it installs; once it passes the gate it is bad no more.
    let mut up = pending();
    ok(&mut up, Event::HealthFailed("x".into()));
    let (mut up, _) = Updater::resume(
        up.config.clone(),
        up.state().clone(),
        facts(Slot::A, "1.4.2"),
        up.history().clone(),
        NOW,
    );
    ok(
        &mut up,
        Event::InstallRequested {
            release: release("1.5.0"),
            force: true,
        },
    );
    up.state = State::PendingHealth {
        release: release("1.5.0"),
        slot: B,
        deadline: NOW + 300,
    };
    ok(&mut up, Event::SlotMarkedGood);
    assert!(up.history().bad(v("1.5.0")).is_none());
}

#[test]
fn operator_rollback_from_good_needs_force_and_a_bootable_slot() {
    let mut up = pending();
    ok(&mut up, Event::SlotMarkedGood);
    let err = up
        .handle(Event::Rollback { force: false }, NOW)
        .unwrap_err();
    assert_eq!(err, EventError::RollbackNeedsForce { to: Slot::A });
    assert!(err.to_string().contains("repeat with force"));
    let mut no_old = up.clone();
    no_old.facts.inactive_bootable = false;
    let err = no_old
        .handle(Event::Rollback { force: true }, NOW)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "slot A holds no bootable system to roll back to"
    );

    let c = ok(&mut up, Event::Rollback { force: true });
    let c = after_persist(&up, c);
    assert!(matches!(c[0], Command::RecordBadRelease { version, .. } if version == v("1.5.0")));
    assert_eq!(
        c[1..],
        [Command::SwitchBootTarget { slot: Slot::A }, Command::Reboot]
    );
    assert!(matches!(
        up.state(),
        State::Failed {
            step: Step::Rollback,
            rollback: Some(Rollback { to: Slot::A, .. }),
            ..
        }
    ));

    // From Idle there is no release to hold responsible.
    let mut up = updater();
    let c = ok(&mut up, Event::Rollback { force: true });
    assert_eq!(
        after_persist(&up, c),
        vec![Command::SwitchBootTarget { slot: B }, Command::Reboot]
    );
    assert!(up.history().bad_releases().is_empty());
}

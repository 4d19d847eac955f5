//! The brake at check time and before the slot is armed.

use crate::history::Outcome;
use crate::release::Refusal;
use crate::state::tests::*;
use crate::state::{Command, Event, EventError, State};
use crate::testutil::{facts, pausing, release, yanking};
use crate::{Brake, BrakeCheck, Slot};

#[test]
fn a_paused_release_is_refused_at_check_time_and_taken_once_resumed() {
    let mut up = updater();
    ok(&mut up, Event::CheckRequested);
    let c = ok(
        &mut up,
        Event::ReleaseFound {
            release: release("1.5.0"),
            brake: pausing("1.5.0"),
        },
    );
    assert_eq!(up.state(), &State::Idle);
    let c = after_persist(&up, c);
    assert!(
        matches!(&c[..], [Command::Refused(r @ Refusal::Paused { .. })] if r.to_string().contains("bad GPU driver")),
        "{c:?}"
    );
    assert!(up.history().last_attempt().is_none(), "nothing started");

    // Resumed (the next brake lists nothing): taken.
    ok(&mut up, Event::CheckRequested);
    ok(
        &mut up,
        Event::ReleaseFound {
            release: release("1.5.0"),
            brake: Brake::default(),
        },
    );
    assert!(matches!(up.state(), State::Downloading { .. }));
}

#[test]
fn a_yanked_release_is_refused_at_check_time() {
    let mut up = updater();
    ok(&mut up, Event::CheckRequested);
    let c = ok(
        &mut up,
        Event::ReleaseFound {
            release: release("1.5.0"),
            brake: yanking("1.5.0"),
        },
    );
    assert!(c
        .iter()
        .any(|c| matches!(c, Command::Refused(Refusal::Yanked { .. }))));
    assert_eq!(up.state(), &State::Idle);
    // Another version is not held.
    ok(&mut up, Event::CheckRequested);
    ok(
        &mut up,
        Event::ReleaseFound {
            release: release("1.5.1"),
            brake: yanking("1.5.0"),
        },
    );
    assert!(matches!(up.state(), State::Downloading { .. }));
}

#[test]
fn a_staged_release_paused_before_the_reboot_is_not_applied() {
    for brake in [pausing("1.5.0"), yanking("1.5.0")] {
        let mut up = staged();
        let c = ok(&mut up, Event::BrakeChecked(BrakeCheck::Fresh(brake)));
        assert_eq!(up.state(), &State::Idle);
        let c = after_persist(&up, c);
        assert_eq!(c[0], Command::InvalidateSlot { slot: Slot::B });
        assert!(matches!(c[1], Command::Refused(_)), "{c:?}");
        assert_eq!(c.len(), 2);
        let last = up.history().last_attempt().unwrap();
        assert_eq!(last.outcome, Outcome::Braked);
        assert!(last.reason.as_deref().unwrap().contains("bad GPU driver"));
        // Never armed: a late SlotArmed is refused.
        assert!(matches!(
            up.handle(Event::SlotArmed, NOW),
            Err(EventError::Unexpected { .. })
        ));
        // Not recorded bad: a later resume lets it in again.
        assert!(up.history().bad_releases().is_empty());
    }
}

#[test]
fn offline_before_the_reboot_the_last_verified_brake_decides_until_it_expires() {
    // Unexpired, no brake: armed.
    let mut up = staged();
    let c = ok(
        &mut up,
        Event::BrakeChecked(BrakeCheck::Stale {
            brake: Brake::default(),
            expires: NOW + 1,
            error: "offline".into(),
        }),
    );
    assert_eq!(
        c,
        vec![Command::ArmSlot {
            slot: Slot::B,
            tries: 3
        }]
    );
    ok(&mut up, Event::SlotArmed);
    assert!(matches!(up.state(), State::Rebooting { .. }));

    // Expired: not applied, still staged; the next resume checks again.
    let mut up = staged();
    let before = up.state().clone();
    let c = ok(
        &mut up,
        Event::BrakeChecked(BrakeCheck::Stale {
            brake: Brake::default(),
            expires: NOW,
            error: "offline".into(),
        }),
    );
    assert!(
        matches!(&c[..], [Command::Refused(Refusal::BrakeUnknown { .. })]),
        "{c:?}"
    );
    assert_eq!(up.state(), &before);
    assert!(up.handle(Event::SlotArmed, NOW).is_err());
    let (_, c) = resume(before, facts(Slot::A, "1.4.2"));
    assert_eq!(c, vec![Command::CheckBrake]);
}

#[test]
fn a_clearance_does_not_outlive_a_restart() {
    let mut up = staged();
    ok(&mut up, brake_clear());
    // The power goes before SlotArmed is fed: resumed, it checks again.
    let (mut up, c) = resume(up.state().clone(), facts(Slot::A, "1.4.2"));
    assert_eq!(c, vec![Command::CheckBrake]);
    assert!(up.handle(Event::SlotArmed, NOW).is_err());
}

//! Every transition of [`Updater::handle`]; resume cases are in
//! `resume/tests.rs`.

use super::*;
use crate::chunk::{plan, LocalChunks};
use crate::history::Outcome;
use crate::testutil::{facts, image, index_of, release, v, RELEASE_LEN};

pub(super) const NOW: UnixSecs = 1_700_000_000;
pub(super) const B: Slot = Slot::B;

pub(super) fn updater() -> Updater {
    Updater::new(
        UpdaterConfig::default(),
        facts(Slot::A, "1.4.2"),
        History::new(),
    )
}

/// The check's answer: `r`, no brake.
pub(super) fn found(r: ReleaseInfo) -> Event {
    Event::ReleaseFound {
        release: r,
        brake: Brake::default(),
    }
}

/// A fresh brake check that holds nothing.
pub(super) fn brake_clear() -> Event {
    Event::BrakeChecked(BrakeCheck::Fresh(Brake::default()))
}

pub(super) fn ok(up: &mut Updater, e: Event) -> Vec<Command> {
    up.handle(e, NOW).unwrap()
}

/// The commands after the leading `Persist`, which must hold the state.
pub(super) fn after_persist(up: &Updater, mut cmds: Vec<Command>) -> Vec<Command> {
    assert_eq!(
        cmds.first(),
        Some(&Command::Persist(up.state().clone())),
        "{cmds:?}"
    );
    cmds.remove(0);
    cmds.retain(|c| !matches!(c, Command::PersistHistory(_)));
    cmds
}

/// The release image's plan against an active slot that differs in its
/// chunk 2 and its short last chunk (chunk 10).
pub(super) fn delta_plan() -> Plan {
    let new = image(RELEASE_LEN, 7);
    let mut old = new.clone();
    old[2 * 65536 + 9] ^= 1;
    old[RELEASE_LEN - 1] ^= 1;
    plan(
        &index_of(&new, 65536),
        &LocalChunks::from_index(&index_of(&old, 65536)),
        8 << 20,
    )
}

pub(super) fn downloading() -> Updater {
    let mut up = updater();
    ok(&mut up, Event::CheckRequested);
    ok(&mut up, found(release("1.5.0")));
    up
}

pub(super) fn writing() -> Updater {
    let mut up = downloading();
    ok(&mut up, Event::DownloadPlanned(delta_plan()));
    ok(&mut up, Event::DownloadProgress { first: 2, count: 1 });
    ok(
        &mut up,
        Event::DownloadProgress {
            first: 10,
            count: 1,
        },
    );
    ok(&mut up, Event::DownloadDone);
    up
}

pub(super) fn staged() -> Updater {
    let mut up = writing();
    ok(
        &mut up,
        Event::WriteProgress {
            bytes_written: RELEASE_LEN as u64,
        },
    );
    ok(
        &mut up,
        Event::WriteVerified {
            sha256: release("1.5.0").image_sha256,
        },
    );
    up
}

pub(super) fn rebooting() -> Updater {
    let mut up = staged();
    ok(&mut up, brake_clear());
    ok(&mut up, Event::SlotArmed);
    up
}

/// Facts after booting the new slot B, not yet marked good.
pub(super) fn facts_on_new() -> BootFacts {
    BootFacts {
        booted_good: false,
        next_boot: B,
        ..facts(B, "1.5.0")
    }
}

pub(super) fn pending() -> Updater {
    let up = rebooting();
    let state = up.state().clone();
    Updater::resume(
        up.config.clone(),
        state,
        facts_on_new(),
        up.history().clone(),
        NOW,
    )
    .0
}

#[test]
fn the_whole_update_in_order() {
    let mut up = updater();
    let c = ok(&mut up, Event::CheckRequested);
    assert_eq!(after_persist(&up, c), vec![Command::FetchMetadata]);
    assert_eq!(up.state(), &State::Checking);

    let c = ok(&mut up, found(release("1.5.0")));
    assert!(c.iter().any(|c| matches!(c, Command::PersistHistory(_))));
    assert_eq!(
        after_persist(&up, c),
        vec![Command::PrepareDownload {
            release: release("1.5.0")
        }]
    );
    assert_eq!(
        up.history().last_attempt().unwrap().outcome,
        Outcome::InProgress
    );

    let plan = delta_plan();
    assert_eq!(plan.bytes_to_fetch(), 65536 + 32768);
    let c = ok(&mut up, Event::DownloadPlanned(plan.clone()));
    assert_eq!(
        after_persist(&up, c),
        vec![Command::Download {
            ranges: plan.fetch().to_vec()
        }]
    );
    let State::Downloading {
        bytes_total,
        bytes_done,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert_eq!((*bytes_done, *bytes_total), (0, 98_304));

    let c = ok(&mut up, Event::DownloadProgress { first: 2, count: 1 });
    assert_eq!(after_persist(&up, c), vec![]);
    let State::Downloading { bytes_done, .. } = up.state() else {
        panic!()
    };
    assert_eq!(*bytes_done, 65536);
    ok(
        &mut up,
        Event::DownloadProgress {
            first: 10,
            count: 1,
        },
    );

    let c = ok(&mut up, Event::DownloadDone);
    let r = release("1.5.0");
    assert_eq!(
        after_persist(&up, c),
        vec![
            Command::InvalidateSlot { slot: B },
            Command::WriteSlot {
                slot: B,
                release: r.clone()
            }
        ]
    );
    assert_eq!(
        ok(
            &mut up,
            Event::WriteProgress {
                bytes_written: 1000
            }
        ),
        vec![]
    );
    let c = ok(
        &mut up,
        Event::WriteProgress {
            bytes_written: RELEASE_LEN as u64,
        },
    );
    assert_eq!(c, vec![Command::VerifyImage { slot: B }]);

    let c = ok(
        &mut up,
        Event::WriteVerified {
            sha256: r.image_sha256,
        },
    );
    assert_eq!(
        after_persist(&up, c),
        vec![Command::DiscardDownload, Command::CheckBrake]
    );
    assert_eq!(
        up.state(),
        &State::Staged {
            release: r.clone(),
            slot: B
        }
    );
    // The brake holds nothing: arm (the state is unchanged).
    let c = ok(&mut up, brake_clear());
    assert_eq!(c, vec![Command::ArmSlot { slot: B, tries: 3 }]);

    let c = ok(&mut up, Event::SlotArmed);
    assert_eq!(
        after_persist(&up, c),
        vec![Command::SwitchBootTarget { slot: B }, Command::Reboot]
    );
    assert_eq!(ok(&mut up, Event::RebootIssued), vec![]);

    // The reboot: the new system resumes the persisted state.
    let (mut up, c) = Updater::resume(
        up.config.clone(),
        up.state().clone(),
        facts_on_new(),
        up.history().clone(),
        NOW + 60,
    );
    let deadline = NOW + 60 + 300;
    assert_eq!(
        after_persist(&up, c),
        vec![Command::RunHealthGate { deadline }]
    );
    assert_eq!(
        up.state(),
        &State::PendingHealth {
            release: r.clone(),
            slot: B,
            deadline
        }
    );

    assert_eq!(
        ok(&mut up, Event::HealthPassed),
        vec![Command::MarkSlotGood { slot: B }]
    );
    let c = ok(&mut up, Event::SlotMarkedGood);
    assert_eq!(after_persist(&up, c), vec![]);
    assert_eq!(
        up.state(),
        &State::Good {
            release: r,
            slot: B
        }
    );
    let last = up.history().last_attempt().unwrap();
    assert_eq!(
        (last.version, last.outcome),
        (v("1.5.0"), Outcome::Succeeded)
    );
}

#[test]
fn checking_ends_idle_on_no_update_abandon_or_error() {
    let mut up = updater();
    ok(&mut up, Event::CheckRequested);
    assert_eq!(
        ok(&mut up, Event::CheckRequested),
        vec![],
        "already checking"
    );
    ok(&mut up, Event::NoUpdate);
    assert_eq!(up.state(), &State::Idle);
    ok(&mut up, Event::CheckRequested);
    ok(&mut up, Event::Abandon);
    assert_eq!(up.state(), &State::Idle);
    ok(&mut up, Event::Wake);
    ok(
        &mut up,
        Event::Error {
            step: Step::Check,
            reason: "timestamp.json expired".into(),
        },
    );
    assert!(matches!(
        up.state(),
        State::Failed {
            release: None,
            step: Step::Check,
            ..
        }
    ));
    // A failed check is a rest state: the next check starts.
    let c = ok(&mut up, Event::CheckRequested);
    assert_eq!(after_persist(&up, c), vec![Command::FetchMetadata]);
}

pub(super) fn refused_on_check(up: &mut Updater, r: ReleaseInfo) -> Vec<Command> {
    ok(up, Event::CheckRequested);
    let c = ok(up, found(r));
    assert_eq!(up.state(), &State::Idle);
    after_persist(up, c)
}

#[test]
fn unexpected_events_change_nothing() {
    let cases: Vec<(Updater, Event)> = vec![
        (updater(), Event::DownloadDone),
        (updater(), Event::HealthPassed),
        (updater(), Event::MarkGood),
        (updater(), Event::Abandon),
        (downloading(), Event::DownloadDone),
        (
            downloading(),
            Event::DownloadProgress { first: 0, count: 1 },
        ),
        (downloading(), Event::SlotArmed),
        (writing(), Event::DownloadDone),
        (staged(), Event::RebootIssued),
        // Armed only after a brake check cleared the release.
        (staged(), Event::SlotArmed),
        (rebooting(), Event::HealthPassed),
        (pending(), Event::CheckRequested),
    ];
    for (mut up, event) in cases {
        let before = (up.state().clone(), up.history().clone());
        let name = event.name();
        let err = up.handle(event, NOW).unwrap_err();
        assert!(
            matches!(err, EventError::Unexpected { .. }),
            "{name}: {err}"
        );
        assert_eq!((up.state().clone(), up.history().clone()), before, "{name}");
    }
}

/// Resumes `state` on `facts` with the default config and no history.
pub(super) fn resume(state: State, facts: BootFacts) -> (Updater, Vec<Command>) {
    Updater::resume(UpdaterConfig::default(), state, facts, History::new(), NOW)
}

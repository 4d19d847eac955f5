//! Resume after a power cut, case by case (see the table in `resume.rs`).

use super::*;
use crate::state::tests::{
    delta_plan, downloading, facts_on_new, ok, pending, rebooting, resume, staged, NOW,
};
use crate::state::Event;
use crate::testutil::{facts, release, v, RELEASE_LEN};
use crate::{ReleaseInfo, Slot, Step};

const A: Slot = Slot::A;
const B: Slot = Slot::B;

fn rel() -> ReleaseInfo {
    release("1.5.0")
}

#[test]
fn rest_states_and_checking() {
    let on_a = facts(A, "1.4.2");
    assert_eq!(resume(State::Idle, on_a.clone()).1, vec![]);
    assert_eq!(
        resume(State::Checking, on_a.clone()).1,
        vec![Command::FetchMetadata]
    );
    let good = State::Good {
        release: rel(),
        slot: A,
    };
    assert_eq!(resume(good, on_a.clone()).1, vec![]);
    let (up, cmds) = resume(
        State::Good {
            release: rel(),
            slot: B,
        },
        on_a,
    );
    assert_eq!(
        (up.state(), cmds),
        (&State::Idle, vec![Command::Persist(State::Idle)])
    );
}

#[test]
fn a_download_resumes_with_the_chunks_it_has() {
    let mut up = downloading();
    ok(&mut up, Event::DownloadPlanned(delta_plan()));
    ok(&mut up, Event::DownloadProgress { first: 2, count: 1 });
    // Power cut; the state comes back from its JSON.
    let json = serde_json::to_string(up.state()).unwrap();
    let (mut up, cmds) = resume(serde_json::from_str(&json).unwrap(), facts(A, "1.4.2"));
    assert_eq!(cmds, vec![Command::PrepareDownload { release: rel() }]);
    let cmds = ok(&mut up, Event::DownloadPlanned(delta_plan()));
    let last_chunk = crate::ByteRange {
        start: 10 * 65536,
        end: RELEASE_LEN as u64,
    };
    assert_eq!(
        cmds[1..],
        [Command::Download {
            ranges: vec![last_chunk]
        }]
    );
    let State::Downloading {
        bytes_done,
        bytes_total,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert_eq!((*bytes_done, *bytes_total), (65536, 65536 + 32768));
}

#[test]
fn a_write_restarts_from_scratch_on_the_inactive_slot() {
    for booted in [A, B] {
        let state = State::Writing {
            release: rel(),
            bytes_written: 12345,
        };
        let (up, cmds) = resume(state, facts(booted, "1.4.2"));
        let slot = booted.other();
        let want = vec![
            Command::Persist(State::Writing {
                release: rel(),
                bytes_written: 0,
            }),
            Command::InvalidateSlot { slot },
            Command::WriteSlot {
                slot,
                release: rel(),
            },
        ];
        assert_eq!(cmds, want);
        assert_eq!(up.inactive(), slot);
    }
}

#[test]
fn staged_rearms_or_runs_the_health_gate_when_the_armed_slot_booted() {
    let (_, cmds) = resume(staged().state().clone(), facts(A, "1.4.2"));
    assert_eq!(cmds, vec![Command::CheckBrake]);
    // Armed, then the power went before Rebooting was persisted, and the
    // bootloader booted the armed slot: the health gate decides.
    let (up, cmds) = resume(
        State::Staged {
            release: rel(),
            slot: A,
        },
        facts(A, "1.4.2"),
    );
    assert!(
        matches!(up.state(), State::PendingHealth { slot: A, .. }),
        "{:?}",
        up.state()
    );
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::RunHealthGate { .. })));
}

#[test]
fn rebooting_resumes_by_what_the_bootloader_did() {
    let state = rebooting().state().clone();
    // Came up on the new slot: the health gate.
    let (up, cmds) = resume(state.clone(), facts_on_new());
    assert!(matches!(up.state(), State::PendingHealth { slot: B, .. }));
    assert_eq!(
        cmds[1..],
        [Command::RunHealthGate {
            deadline: NOW + 300
        }]
    );

    // Still on A, boot target already B: the reboot never happened.
    let switched = BootFacts {
        next_boot: B,
        inactive_tries_left: Some(3),
        ..facts(A, "1.4.2")
    };
    assert_eq!(resume(state.clone(), switched).1, vec![Command::Reboot]);

    // Still on A, target A, B armed and untried: the switch did not stick.
    let unswitched = BootFacts {
        inactive_tries_left: Some(3),
        ..facts(A, "1.4.2")
    };
    let (up, cmds) = resume(state.clone(), unswitched);
    assert_eq!(
        up.state(),
        &State::Staged {
            release: rel(),
            slot: B
        }
    );
    assert_eq!(cmds[1..], [Command::CheckBrake]);

    // Still on A, B's tries spent: it was booted and fell back.
    for tries in [Some(0), Some(1), None] {
        let fell_back = BootFacts {
            inactive_tries_left: tries,
            ..facts(A, "1.4.2")
        };
        let (up, cmds) = resume(state.clone(), fell_back);
        assert!(matches!(
            up.state(),
            State::Failed {
                step: Step::Boot,
                rollback: None,
                ..
            }
        ));
        assert!(up.history().bad(v("1.5.0")).is_some());
        assert!(cmds.contains(&Command::InvalidateSlot { slot: B }));
        assert!(cmds
            .iter()
            .any(|c| matches!(c, Command::RecordBadRelease { .. })));
    }
}

#[test]
fn pending_health_resumes_by_where_it_booted() {
    let state = pending().state().clone();
    let (up, cmds) = resume(
        state.clone(),
        BootFacts {
            booted_good: true,
            ..facts_on_new()
        },
    );
    assert_eq!(
        up.state(),
        &State::Good {
            release: rel(),
            slot: B
        }
    );
    assert!(matches!(
        cmds[..],
        [Command::Persist(_), Command::PersistHistory(_)]
    ));

    let (up, cmds) = Updater::resume(
        UpdaterConfig::default(),
        state.clone(),
        facts_on_new(),
        History::new(),
        NOW + 999,
    );
    assert_eq!(
        cmds[1..],
        [Command::RunHealthGate {
            deadline: NOW + 999 + 300
        }]
    );
    assert!(matches!(up.state(), State::PendingHealth { deadline, .. } if *deadline == NOW + 1299));

    // The bootloader fell back to the old slot.
    let (up, cmds) = resume(state, facts(A, "1.4.2"));
    let State::Failed {
        step: Step::Boot,
        reason,
        rollback: None,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert!(reason.contains("fell back to slot A"), "{reason}");
    let bad = up.history().bad(v("1.5.0")).unwrap();
    assert_eq!(bad.reason, *reason);
    assert!(cmds.contains(&Command::InvalidateSlot { slot: B }));
    assert!(cmds.contains(&Command::RecordBadRelease {
        version: v("1.5.0"),
        reason: reason.clone()
    }));
}

#[test]
fn a_rollback_reboots_at_most_twice() {
    let failed = |reboots| State::Failed {
        release: Some(rel()),
        reason: "gate".into(),
        step: Step::Health,
        rollback: Some(Rollback { to: A, reboots }),
    };
    let (up, _) = resume(failed(0), facts(A, "1.4.2"));
    assert!(
        matches!(up.state(), State::Failed { rollback: None, .. }),
        "arrived"
    );

    let (up, cmds) = resume(failed(0), facts_on_new());
    assert_eq!(
        cmds[1..],
        [Command::SwitchBootTarget { slot: A }, Command::Reboot]
    );
    assert!(matches!(
        up.state(),
        State::Failed {
            rollback: Some(Rollback { reboots: 1, .. }),
            ..
        }
    ));
    let (up, cmds) = resume(up.state().clone(), facts_on_new());
    assert_eq!(cmds.len(), 3);
    let (up, cmds) = resume(up.state().clone(), facts_on_new());
    assert_eq!(cmds.len(), 1, "gave up: {cmds:?}");
    let State::Failed {
        rollback: None,
        reason,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert!(
        reason.ends_with("slot A did not boot after 2 rollback reboots, staying on slot B"),
        "{reason}"
    );
}

//! Admission, waves, the download and the slot write.

use crate::chunk::{plan, ByteRange, LocalChunks};
use crate::history::Outcome;
use crate::release::{Refusal, Variant, Wave, Waves};
use crate::state::tests::*;
use crate::state::{Command, Event, EventError, State, Step, Updater};
use crate::testutil::{image, index_of, release, v, RELEASE_LEN};

#[test]
fn found_releases_that_are_not_taken() {
    let mut up = updater();
    let older = refused_on_check(&mut up, release("1.4.1"));
    assert_eq!(
        older,
        vec![Command::Refused(Refusal::NotNewer {
            version: v("1.4.1"),
            running: v("1.4.2")
        })]
    );
    let mut needs = release("2.0.0");
    needs.min_version = Some(v("1.5.0"));
    let c = refused_on_check(&mut up, needs);
    assert!(matches!(
        c[..],
        [Command::Refused(Refusal::BelowMinVersion { .. })]
    ));
    let mut other = release("1.5.0");
    other.variant = Variant::new("aarch64-jetson").unwrap();
    let c = refused_on_check(&mut up, other);
    assert!(matches!(
        c[..],
        [Command::Refused(Refusal::WrongVariant { .. })]
    ));

    // Waves: not yet (with a wake-up at the wave), and never.
    let mut staged = release("1.5.0");
    staged.waves = Waves::new(vec![Wave {
        start: NOW + 500,
        fraction: 1.0,
    }])
    .unwrap();
    let c = refused_on_check(&mut up, staged.clone());
    let not_before = NOW + 500;
    assert_eq!(
        c,
        vec![
            Command::Refused(Refusal::NotYet {
                version: v("1.5.0"),
                not_before
            }),
            Command::WakeAt(not_before)
        ]
    );
    ok(&mut up, Event::Wake);
    assert_eq!(up.handle(found(staged), not_before).unwrap().len(), 3);
    assert!(matches!(up.state(), State::Downloading { .. }));

    let mut up = updater();
    let mut capped = release("1.5.0");
    capped.waves = Waves::new(vec![Wave {
        start: 0,
        fraction: 0.0,
    }])
    .unwrap();
    let c = refused_on_check(&mut up, capped);
    assert_eq!(
        c,
        vec![Command::Refused(Refusal::OutsideRollout {
            version: v("1.5.0")
        })]
    );
    assert!(
        up.history().last_attempt().is_none(),
        "a refusal is not an attempt"
    );
}

#[test]
fn operator_installs_lift_only_the_floor_the_bad_record_and_the_waves() {
    let mut up = updater();
    let err = up
        .handle(
            Event::InstallRequested {
                release: release("1.4.0"),
                force: false,
            },
            NOW,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("install refused: release 1.4.0 is not newer"),
        "{err}"
    );
    assert_eq!(up.state(), &State::Idle);
    let mut capped = release("1.4.0");
    capped.waves = Waves::new(vec![Wave {
        start: 0,
        fraction: 0.0,
    }])
    .unwrap();
    ok(
        &mut up,
        Event::InstallRequested {
            release: capped,
            force: true,
        },
    );
    assert!(matches!(up.state(), State::Downloading { .. }));
    assert!(up.history().last_attempt().unwrap().forced);

    let mut up = updater();
    let mut other = release("1.5.0");
    other.variant = Variant::new("aarch64-jetson").unwrap();
    let err = up
        .handle(
            Event::InstallRequested {
                release: other,
                force: true,
            },
            NOW,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        EventError::Refused(Refusal::WrongVariant { .. })
    ));
    let mut needs = release("2.0.0");
    needs.min_version = Some(v("2.0.0"));
    let err = up
        .handle(
            Event::InstallRequested {
                release: needs,
                force: true,
            },
            NOW,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        EventError::Refused(Refusal::BelowMinVersion { .. })
    ));
}

#[test]
fn download_plan_mismatch_resend_retries_and_abandon() {
    let mut up = downloading();
    let mut wrong = release("1.5.0");
    wrong.image_len += 1;
    let bad_plan = plan(
        &index_of(&image(RELEASE_LEN + 1, 8), 65536),
        &LocalChunks::new(),
        1 << 20,
    );
    let c = ok(&mut up, Event::DownloadPlanned(bad_plan));
    assert_eq!(after_persist(&up, c), vec![Command::DiscardDownload]);
    let State::Failed {
        reason,
        step: Step::Download,
        ..
    } = up.state()
    else {
        panic!("{:?}", up.state())
    };
    assert!(
        reason.contains("the chunk index describes a 688129-byte image"),
        "{reason}"
    );
    assert!(
        up.history().bad(v("1.5.0")).is_none(),
        "not held against the release"
    );

    // Done with chunks missing: only those are asked for again.
    let mut up = downloading();
    ok(&mut up, Event::DownloadPlanned(delta_plan()));
    ok(&mut up, Event::DownloadProgress { first: 2, count: 1 });
    let c = ok(&mut up, Event::DownloadDone);
    assert_eq!(
        c,
        vec![Command::Download {
            ranges: vec![ByteRange {
                start: 655_360,
                end: 688_128
            }]
        }]
    );
    let err = up
        .handle(
            Event::DownloadProgress {
                first: 10,
                count: 2,
            },
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        err,
        EventError::ChunkOutOfRange {
            first: 10,
            end: 12,
            count: 11
        }
    );

    // Errors back off, doubling, and five in a row fail the attempt;
    // progress in between starts the count again.
    let err = |up: &mut Updater| {
        up.handle(
            Event::Error {
                step: Step::Download,
                reason: "503".into(),
            },
            NOW,
        )
        .unwrap()
    };
    err(&mut up);
    err(&mut up);
    ok(
        &mut up,
        Event::DownloadProgress {
            first: 10,
            count: 1,
        },
    );
    for delay in [30, 60, 120, 240, 480] {
        let c = err(&mut up);
        assert_eq!(after_persist(&up, c), vec![Command::WakeAt(NOW + delay)]);
        assert_eq!(
            ok(&mut up, Event::Wake),
            vec![Command::PrepareDownload {
                release: release("1.5.0")
            }]
        );
    }
    let c = err(&mut up);
    assert_eq!(after_persist(&up, c), vec![Command::DiscardDownload]);
    assert!(
        matches!(up.state(), State::Failed { step: Step::Download, reason, .. } if reason == "503 (after 5 retries)")
    );

    let mut up = downloading();
    let c = ok(&mut up, Event::Abandon);
    assert_eq!(after_persist(&up, c), vec![Command::DiscardDownload]);
    assert_eq!(
        up.history().last_attempt().unwrap().outcome,
        Outcome::Abandoned
    );
}

#[test]
fn nothing_to_fetch_goes_straight_to_writing() {
    let mut up = downloading();
    let new = image(RELEASE_LEN, 7);
    let all_local = plan(
        &index_of(&new, 65536),
        &LocalChunks::from_index(&index_of(&new, 65536)),
        1 << 20,
    );
    let c = ok(&mut up, Event::DownloadPlanned(all_local));
    assert!(matches!(
        after_persist(&up, c)[..],
        [
            Command::InvalidateSlot { slot: B },
            Command::WriteSlot { slot: B, .. }
        ]
    ));
}

#[test]
fn writing_overrun_bad_hash_early_verify_error_and_abandon() {
    let mut up = writing();
    let len = RELEASE_LEN as u64;
    let err = up
        .handle(
            Event::WriteProgress {
                bytes_written: len + 1,
            },
            NOW,
        )
        .unwrap_err();
    assert_eq!(
        err,
        EventError::WriteOverrun {
            bytes_written: len + 1,
            image_len: len
        }
    );

    ok(&mut up, Event::WriteProgress { bytes_written: len });
    let wrong = crate::Sha256Digest::of(b"not the image");
    ok(&mut up, Event::WriteVerified { sha256: wrong });
    let State::Failed {
        step: Step::Verify,
        reason,
        ..
    } = up.state()
    else {
        panic!()
    };
    assert!(
        reason.starts_with(&format!("slot B hashes to {wrong}, the signed image is")),
        "{reason}"
    );
    assert!(up.history().bad(v("1.5.0")).is_none());

    let mut up = writing();
    ok(
        &mut up,
        Event::WriteVerified {
            sha256: release("1.5.0").image_sha256,
        },
    );
    assert!(
        matches!(up.state(), State::Failed { step: Step::Verify, reason, .. } if reason.contains("after 0 of"))
    );

    let mut up = writing();
    let c = ok(
        &mut up,
        Event::Error {
            step: Step::Write,
            reason: "EIO".into(),
        },
    );
    assert_eq!(after_persist(&up, c), vec![Command::DiscardDownload]);
    let mut up = writing();
    let c = ok(&mut up, Event::Abandon);
    assert_eq!(after_persist(&up, c), vec![Command::DiscardDownload]);
    assert_eq!(up.state(), &State::Idle);
}

//! The fleet brake end to end on files: a signed repository on disk, the
//! brake published with `nusa_ota_publish::brake` (what `nusactl release
//! pause|resume|yank` runs), the runner checking it at check time and
//! again before a written slot is armed, online and offline.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use common::rig::Rig;
use nusa_ota::runner::{Repository, RunError, Stopped, Until};
use nusa_ota::store::Store;
use nusa_ota_core::{Event, Outcome, State, Version};
use nusa_ota_publish::brake::{change_brake, entry, BrakeChange};
use nusa_ota_slots::{Slot, SlotBackend};
use nusa_ota_tuf::Expiries;

async fn brake(rig: &Rig, change: BrakeChange) -> Result<(), String> {
    change_brake(&rig.repo, &rig.keys, change, &Expiries::standard())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn pause(version: &str) -> BrakeChange {
    BrakeChange::Pause(entry(version, None, "GPU driver hangs", "alice", 1_700_000_000).unwrap())
}

fn yank(version: &str) -> BrakeChange {
    BrakeChange::Yank(
        entry(
            version,
            None,
            "corrupts the model cache",
            "bob",
            1_700_000_100,
        )
        .unwrap(),
    )
}

fn resume(version: &str) -> BrakeChange {
    BrakeChange::Resume {
        version: version.parse::<Version>().unwrap(),
        variant: None,
    }
}

fn refusal(rig: &Rig) -> String {
    std::fs::read_to_string(rig.state.join("refusal.txt")).unwrap_or_default()
}

fn persisted(rig: &Rig) -> State {
    Store::open(&rig.state).unwrap().state().unwrap().unwrap()
}

async fn check(rig: &Rig) -> (Stopped, State) {
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    (stop, r.state().clone())
}

/// Downloads the release, then writes and verifies it, stopping (as at a
/// power cut) right after `Staged` was persisted, before the brake check.
async fn stage(rig: &Rig) {
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Downloaded)
        .await
        .unwrap();
    assert_eq!(stop, Stopped::Downloaded);
    for n in 1..40 {
        let mut setup = rig.setup();
        setup.cut_after_commands = Some(n);
        let mut r = nusa_ota::runner::Runner::open(setup).unwrap();
        match r.drive(None, Until::Settled).await {
            Err(RunError::CutAfterCommands(_)) => {}
            other => panic!("cut {n}: {other:?}"),
        }
        if matches!(persisted(rig), State::Staged { .. }) {
            return;
        }
    }
    panic!("never staged: {:?}", persisted(rig));
}

#[tokio::test]
async fn a_paused_release_is_refused_at_check_time_and_taken_once_resumed() {
    let rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    brake(&rig, pause("1.1.0")).await.unwrap();

    let (stop, state) = check(&rig).await;
    assert_eq!((stop, state), (Stopped::Settled, State::Idle));
    let why = refusal(&rig);
    assert!(
        why.contains("1.1.0 is paused")
            && why.contains("GPU driver hangs")
            && why.contains("alice"),
        "{why}"
    );
    assert!(rig.backend().status().unwrap().next == Slot::A);
    assert!(
        Store::open(&rig.state)
            .unwrap()
            .history()
            .unwrap()
            .last_attempt()
            .is_none(),
        "nothing was started"
    );

    brake(&rig, resume("1.1.0")).await.unwrap();
    let (stop, state) = check(&rig).await;
    assert_eq!(stop, Stopped::Reboot);
    assert!(matches!(state, State::Rebooting { .. }), "{state:?}");
    assert_eq!(rig.backend().status().unwrap().next, Slot::B);
}

#[tokio::test]
async fn a_release_paused_after_it_was_staged_is_not_applied() {
    let rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    stage(&rig).await;
    brake(&rig, pause("1.1.0")).await.unwrap();

    // The next run resumes Staged: the brake holds it, the slot is not armed.
    let mut r = rig.runner();
    let stop = r.drive(None, Until::Settled).await.unwrap();
    assert_eq!(stop, Stopped::Settled);
    assert_eq!(r.state(), &State::Idle);
    let status = rig.backend().status().unwrap();
    assert_eq!(status.next, Slot::A, "the boot target never moved");
    assert!(!status.slot(Slot::B).bootable, "slot B is invalidated");
    let last = r.history().last_attempt().unwrap().clone();
    assert_eq!(last.outcome, Outcome::Braked);
    assert!(last.reason.unwrap().contains("GPU driver hangs"));
    assert!(refusal(&rig).contains("paused"), "{}", refusal(&rig));
    assert!(r.history().bad_releases().is_empty(), "paused is not bad");

    // Resumed: taken again on the next check.
    brake(&rig, resume("1.1.0")).await.unwrap();
    let (stop, _) = check(&rig).await;
    assert_eq!(stop, Stopped::Reboot);
}

#[tokio::test]
async fn a_yanked_release_is_never_applied_and_cannot_be_resumed() {
    let rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    stage(&rig).await;
    brake(&rig, yank("1.1.0")).await.unwrap();
    let mut r = rig.runner();
    r.drive(None, Until::Settled).await.unwrap();
    assert_eq!(r.state(), &State::Idle);
    assert_eq!(rig.backend().status().unwrap().next, Slot::A);
    assert!(refusal(&rig).contains("yanked"), "{}", refusal(&rig));

    let err = brake(&rig, resume("1.1.0")).await.unwrap_err();
    assert!(err.contains("permanent"), "{err}");
    let err = brake(&rig, pause("1.1.0")).await.unwrap_err();
    assert!(err.contains("permanent"), "{err}");
    let (_, state) = check(&rig).await;
    assert_eq!(state, State::Idle);
    assert!(
        refusal(&rig).contains("never installed"),
        "{}",
        refusal(&rig)
    );
    // A release that is not published cannot be braked (a typo).
    let err = brake(&rig, pause("1.9.9")).await.unwrap_err();
    assert!(err.contains("no release 1.9.9"), "{err}");
}

#[tokio::test]
async fn offline_before_the_reboot_the_last_verified_brake_decides_until_it_expires() {
    let mut rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    stage(&rig).await;
    let online = rig.repository.take();
    rig.repository = Some(Repository::Dir(rig.path().join("unplugged-usb-stick")));

    // The metadata seen at check time expired: nothing is applied, the
    // written slot stays staged, the refusal says why.
    let seen = rig.state.join("brake-seen.json");
    let record = std::fs::read_to_string(&seen).unwrap();
    let mut expired: serde_json::Value = serde_json::from_str(&record).unwrap();
    expired["expires"] = 1.into();
    std::fs::write(&seen, expired.to_string()).unwrap();
    let mut r = rig.runner();
    assert_eq!(
        r.drive(None, Until::Settled).await.unwrap(),
        Stopped::Settled
    );
    assert!(matches!(r.state(), State::Staged { .. }), "{:?}", r.state());
    assert_eq!(rig.backend().status().unwrap().next, Slot::A);
    assert!(
        refusal(&rig).contains("could not be checked"),
        "{}",
        refusal(&rig)
    );

    // Unexpired and no brake in it: applied.
    std::fs::write(&seen, &record).unwrap();
    let mut r = rig.runner();
    assert_eq!(
        r.drive(None, Until::Settled).await.unwrap(),
        Stopped::Reboot
    );
    assert_eq!(rig.backend().status().unwrap().next, Slot::B);
    rig.repository = online;
}

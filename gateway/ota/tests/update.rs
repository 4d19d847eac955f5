//! The updater end to end on files: a signed repository, two slot image
//! files, the file-backed counting bootloader and a health gate test
//! double. Covers the install, the boot into the new slot and its health
//! gate, rollback of a bad release that is then never retried, fallback
//! when the boot tries run out, power cuts before every command and at
//! many byte offsets of the slot write, the delta (bytes fetched against
//! bytes changed), a corrupt local chunk, and the same over HTTPS with a
//! server that fails in every way a link can.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod common;

use std::sync::atomic::Ordering;

use common::rig::{Rig, CHUNK, IMAGE_BYTES};
use common::{Content, Fault, FaultServer};
use nusa_ota::runner::{Repository, RunError, Stopped, Until};
use nusa_ota_core::{Event, History, State};
use nusa_ota_slots::{Slot, SlotBackend};

fn history(rig: &Rig) -> History {
    nusa_ota::store::Store::open(&rig.state)
        .unwrap()
        .history()
        .unwrap()
}

/// Boots, resumes the updater, runs it until it settles (the health gate).
async fn boot_and_settle(rig: &Rig) -> (Slot, State) {
    let slot = rig.boot();
    let mut r = rig.runner();
    let stop = r.drive(None, Until::Settled).await.unwrap();
    let state = r.state().clone();
    if stop == Stopped::Reboot {
        // A rollback: the next power-on completes it.
        let slot = rig.boot();
        let mut r = rig.runner();
        assert_eq!(
            r.drive(None, Until::Settled).await.unwrap(),
            Stopped::Settled
        );
        return (slot, r.state().clone());
    }
    (slot, state)
}

#[tokio::test]
async fn a_good_release_is_installed_booted_and_marked_good() {
    let rig = Rig::new().await;
    // 100 KiB changed at 1 MiB: two or three 64 KiB chunks, plus the
    // header chunk (the version string differs).
    let img = rig.publish("1.1.0", 1 << 20, 100 << 10).await;
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    assert_eq!(stop, Stopped::Reboot);
    assert!(
        matches!(r.state(), State::Rebooting { .. }),
        "{:?}",
        r.state()
    );
    let fetched = r.fetched_bytes();
    // The header's chunk, and the chunks [1 MiB, 1 MiB + 100 KiB) touches.
    let c = CHUNK as u64;
    let changed_chunks = 1 + ((1u64 << 20) + (100 << 10)).div_ceil(c) - (1 << 20) / c;
    println!(
        "delta: fetched {fetched} bytes of a {IMAGE_BYTES}-byte image ({changed_chunks} changed chunks of {CHUNK})"
    );
    assert_eq!(fetched, changed_chunks * CHUNK as u64);
    assert_eq!(
        rig.slot_bytes(Slot::B, IMAGE_BYTES),
        img,
        "slot B holds the image"
    );
    let status = rig.backend().status().unwrap();
    assert_eq!(status.next, Slot::B);
    assert!(
        status.slot(Slot::A).is_good(),
        "A stays good until B proves itself"
    );
    let metrics = std::fs::read_to_string(rig.state.join("metrics.prom")).unwrap();
    assert!(
        metrics.contains(r#"nusa_update_state{state="Rebooting"} 1"#),
        "{metrics}"
    );

    let (slot, state) = boot_and_settle(&rig).await;
    assert_eq!(slot, Slot::B);
    assert!(matches!(state, State::Good { .. }), "{state:?}");
    assert!(rig.backend().status().unwrap().slot(Slot::B).is_good());
    assert_eq!(rig.running().to_string(), "1.1.0");
    let metrics = std::fs::read_to_string(rig.state.join("metrics.prom")).unwrap();
    assert!(
        metrics.contains(r#"nusa_update_state{state="Good"} 1"#),
        "{metrics}"
    );
    // Already running the newest: nothing to do.
    let mut r = rig.runner();
    r.drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    assert!(matches!(r.state(), State::Idle), "{:?}", r.state());
}

#[tokio::test]
async fn a_release_that_fails_its_health_gate_is_rolled_back_and_not_retried() {
    let rig = Rig::new().await;
    rig.publish("1.2.0", 0, 4096).await;
    rig.healthy.store(false, Ordering::SeqCst);
    let mut r = rig.runner();
    assert_eq!(
        r.drive(Some(Event::CheckRequested), Until::Settled)
            .await
            .unwrap(),
        Stopped::Reboot
    );
    let (slot, state) = boot_and_settle(&rig).await;
    assert_eq!(slot, Slot::A, "rolled back to the old slot");
    assert!(
        matches!(state, State::Failed { rollback: None, .. }),
        "{state:?}"
    );
    assert_eq!(rig.running().to_string(), "1.0.0");
    let h = history(&rig);
    assert!(
        h.bad_releases()
            .iter()
            .any(|b| b.version.to_string() == "1.2.0"),
        "{h:?}"
    );

    // The next check finds 1.2.0 again and leaves it alone.
    rig.healthy.store(true, Ordering::SeqCst);
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    assert_eq!(stop, Stopped::Settled);
    assert!(matches!(r.state(), State::Idle), "{:?}", r.state());
    assert_eq!(rig.backend().status().unwrap().next, Slot::A);
}

#[tokio::test]
async fn a_slot_that_never_comes_up_falls_back_when_its_tries_run_out() {
    let rig = Rig::new().await;
    rig.publish("1.3.0", 0, 4096).await;
    let mut r = rig.runner();
    assert_eq!(
        r.drive(Some(Event::CheckRequested), Until::Settled)
            .await
            .unwrap(),
        Stopped::Reboot
    );
    // The new system hangs before the updater runs: three power-ons spend
    // the three tries, the fourth boots A.
    for _ in 0..3 {
        assert_eq!(rig.boot(), Slot::B);
    }
    let (slot, state) = boot_and_settle(&rig).await;
    assert_eq!(slot, Slot::A);
    match &state {
        State::Failed { reason, .. } => assert!(reason.contains("did not come up"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(history(&rig)
        .bad_releases()
        .iter()
        .any(|b| b.version.to_string() == "1.3.0"));
}

/// Runs the whole update with a power cut before command `n` of each run
/// (then a power-on and a resume), until it settles. The active slot must
/// always boot, and the update must complete.
async fn cut_everywhere(cut: impl Fn(u64) -> (Option<u64>, Option<u64>)) -> usize {
    let mut cuts = 0;
    for n in 1.. {
        let rig = Rig::new().await;
        let img = rig.publish("1.1.0", 2 << 20, 200 << 10).await;
        let (at_command, at_byte) = cut(n);
        let mut setup = rig.setup();
        setup.cut_after_commands = at_command;
        setup.cut_write_at = at_byte;
        let mut r = nusa_ota::runner::Runner::open(setup).unwrap();
        let first = r.drive(Some(Event::CheckRequested), Until::Settled).await;
        let cut_happened = matches!(
            first,
            Err(RunError::CutAfterCommands(_) | RunError::PowerCut(_))
        );
        if !cut_happened {
            return cuts;
        }
        cuts += 1;
        drop(r);
        // Power-on after the cut: whatever the bootloader picks must be a
        // whole system (A's untouched image, or B's verified one).
        let booted = rig.boot();
        let head = rig.slot_bytes(booted, 16);
        assert!(
            head.starts_with(b"NUSAIMG 1."),
            "cut {n}: booted a slot that holds no system"
        );
        if booted == Slot::A {
            assert!(rig.slot_bytes(Slot::A, 16).starts_with(b"NUSAIMG 1.0.0"));
        }
        // Resume, and finish (a check restarts an update the cut failed).
        let mut r = rig.runner();
        let resumed = r.state().name();
        let mut stop = r.drive(None, Until::Settled).await.unwrap();
        println!(
            "cut {n}: resumed in {resumed}, settled in {:?} ({stop:?})",
            r.state()
        );
        if !matches!(
            r.state(),
            State::Rebooting { .. } | State::PendingHealth { .. } | State::Good { .. }
        ) {
            stop = r
                .drive(Some(Event::CheckRequested), Until::Settled)
                .await
                .unwrap();
        }
        if stop == Stopped::Reboot {
            drop(r);
            let (slot, state) = boot_and_settle(&rig).await;
            assert_eq!(slot, Slot::B, "cut {n}");
            assert!(matches!(state, State::Good { .. }), "cut {n}: {state:?}");
        } else {
            assert!(
                matches!(r.state(), State::Good { .. }),
                "cut {n}: {:?}",
                r.state()
            );
        }
        assert_eq!(rig.running().to_string(), "1.1.0", "cut {n}");
        assert_eq!(rig.slot_bytes(Slot::B, IMAGE_BYTES), img, "cut {n}");
    }
    cuts
}

#[tokio::test]
async fn a_power_cut_before_any_command_is_survived() {
    let cuts = cut_everywhere(|n| (Some(n), None)).await;
    println!("power cut before each of {cuts} commands, each resumed");
    assert!(cuts >= 15, "only {cuts} commands were cut");
}

#[tokio::test]
async fn a_power_cut_anywhere_in_the_slot_write_is_survived() {
    // Every 8th chunk boundary of the 3 MiB image, and the last one.
    let offsets: Vec<u64> = (1..=48)
        .step_by(8)
        .map(|c| c * CHUNK as u64)
        .chain([IMAGE_BYTES as u64])
        .collect();
    let cuts = cut_everywhere(|n| (None, offsets.get(n as usize - 1).copied())).await;
    assert_eq!(cuts, offsets.len());
}

#[tokio::test]
async fn a_corrupt_local_chunk_is_fetched_instead() {
    let rig = Rig::new().await;
    let img = rig.publish("1.1.0", 1 << 20, 4096).await;
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Downloaded)
        .await
        .unwrap();
    assert_eq!(stop, Stopped::Downloaded);
    let planned = r.fetched_bytes();
    drop(r);
    // Bit rot in slot A, in a chunk the plan copies from it.
    let mut a = std::fs::read(&rig.slots[0]).unwrap();
    a[5 * CHUNK as usize + 10] ^= 0xff;
    std::fs::write(&rig.slots[0], &a).unwrap();
    let mut r = rig.runner();
    assert_eq!(
        r.drive(None, Until::Settled).await.unwrap(),
        Stopped::Reboot
    );
    assert_eq!(
        r.fetched_bytes(),
        CHUNK as u64,
        "exactly the rotten chunk was fetched"
    );
    assert_eq!(rig.slot_bytes(Slot::B, IMAGE_BYTES), img);
    println!("planned fetch {planned} bytes, one more chunk fetched while writing");
}

#[tokio::test]
async fn an_older_release_is_refused_and_the_refusal_is_recorded() {
    let rig = Rig::new().await;
    rig.publish("0.9.0", 0, 4096).await;
    let mut r = rig.runner();
    r.drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    assert!(matches!(r.state(), State::Idle), "{:?}", r.state());
    let refusal = std::fs::read_to_string(rig.state.join("refusal.txt")).unwrap();
    assert!(refusal.contains("0.9.0"), "{refusal}");
    assert!(refusal.contains("not newer than the running"), "{refusal}");
}

#[tokio::test]
async fn over_https_through_every_fault_the_update_completes() {
    let mut rig = Rig::new().await;
    let img = rig.publish("1.1.0", 1 << 20, 300 << 10).await;
    let server = FaultServer::start(Content::Dir(rig.repo.clone())).await;
    server.inject(&[
        Fault::Status(503),
        Fault::Reset,
        Fault::Cut(100_000),
        Fault::Stall(70_000),
        Fault::Status(429),
        Fault::Cut(5),
    ]);
    rig.repository = Some(Repository::Http {
        base: server.url.clone(),
        fetcher: Box::new(server.fetcher()),
    });
    let mut r = rig.runner();
    let stop = r
        .drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    assert_eq!(stop, Stopped::Reboot, "{:?}", r.state());
    assert_eq!(rig.slot_bytes(Slot::B, IMAGE_BYTES), img);
    let ranges = server.ranges.lock().clone();
    println!(
        "HTTPS with faults: {} ranged requests, {} bytes fetched: {ranges:?}",
        ranges.len(),
        r.fetched_bytes()
    );
    assert!(server.faults.lock().is_empty(), "every fault was served");
    let (slot, state) = boot_and_settle(&rig).await;
    assert_eq!(slot, Slot::B);
    assert!(matches!(state, State::Good { .. }));
}

/// What the bootloader and slot A look like when nothing may have changed.
fn assert_untouched(rig: &Rig, a_before: &[u8]) {
    assert_eq!(
        rig.slot_bytes(Slot::A, a_before.len()),
        a_before,
        "slot A changed"
    );
    let status = rig.backend().status().unwrap();
    assert_eq!(status.next, Slot::A);
    assert!(!status.slot(Slot::B).bootable, "slot B was armed");
}

#[tokio::test]
async fn a_tampered_image_or_forged_metadata_never_reaches_a_bootable_slot() {
    // Image bytes changed on the server after signing.
    let rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    let a_before = rig.slot_bytes(Slot::A, IMAGE_BYTES);
    // Stored as targets/<sha256>.x86_64-rtx/1.1.0/root.img.
    let image = walk(&rig.repo.join("targets"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("root.img"))
        .unwrap();
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[(1 << 20) + 100] ^= 0x55;
    std::fs::write(&image, &bytes).unwrap();
    let mut r = rig.runner();
    r.drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    match r.state() {
        State::Failed { reason, .. } => assert!(reason.contains("chunk"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_untouched(&rig, &a_before);

    // targets metadata re-signed by a key the root does not trust.
    let rig = Rig::new().await;
    rig.publish("1.1.0", 1 << 20, 4096).await;
    let a_before = rig.slot_bytes(Slot::A, IMAGE_BYTES);
    let targets = walk(&rig.repo.join("metadata"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".targets.json"))
        .max()
        .unwrap();
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&targets).unwrap()).unwrap();
    json["signatures"][0]["sig"] = serde_json::Value::String("00".repeat(64));
    std::fs::write(&targets, serde_json::to_vec(&json).unwrap()).unwrap();
    let mut r = rig.runner();
    r.drive(Some(Event::CheckRequested), Until::Settled)
        .await
        .unwrap();
    match r.state() {
        State::Failed { reason, .. } => assert!(
            reason.contains("signed") || reason.contains("signature") || reason.contains("hash"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert_untouched(&rig, &a_before);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

//! The file backend as a counting bootloader: the update cycle, fallback,
//! and the traps real bootloaders have (quick power cycles, lost writes,
//! no slot left to boot).
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use nusa_ota_slots::{FileBackend, Slot, SlotBackend, SlotError, WriteFault};

const A: Slot = Slot::A;
const B: Slot = Slot::B;

fn fresh() -> (tempfile::TempDir, FileBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::new(dir.path()).unwrap();
    (dir, backend)
}

fn boots(backend: &FileBackend, n: usize) -> Vec<Slot> {
    (0..n).map(|_| backend.simulate_boot().unwrap()).collect()
}

#[test]
fn a_fresh_state_boots_a_and_b_is_empty() {
    let (_dir, fb) = fresh();
    let st = fb.status().unwrap();
    assert_eq!((st.booted, st.next), (A, A));
    assert!(st.slot(A).is_good());
    assert!(!st.slot(B).bootable);
    assert_eq!(boots(&fb, 3), [A, A, A]);
}

#[test]
fn an_update_that_passes_its_health_gate_keeps_booting() {
    let (_dir, fb) = fresh();
    fb.disarm(B).unwrap();
    fb.arm(B, 3, "1.5.0").unwrap();
    let st = fb.status().unwrap();
    assert_eq!(
        (
            st.next,
            st.slot(B).tries_left,
            st.slot(B).version.as_deref()
        ),
        (B, Some(3), Some("1.5.0"))
    );
    assert_eq!(boots(&fb, 1), [B]);
    assert_eq!(fb.status().unwrap().slot(B).tries_left, Some(2));
    fb.mark_good(B).unwrap();
    // Good slots no longer count tries: many boots, still B.
    assert_eq!(boots(&fb, 5), [B; 5]);
    let st = fb.status().unwrap();
    assert!(st.slot(B).is_good() && st.slot(A).is_good());
    assert_eq!(st.slot(B).tries_left, None);
}

#[test]
fn spent_tries_fall_back_to_the_good_slot() {
    let (_dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(boots(&fb, 5), [B, B, B, A, A]);
    let st = fb.status().unwrap();
    assert_eq!((st.booted, st.next), (A, A));
    assert!(!st.slot(B).bootable, "a slot with no tries left is retired");
    // After the fallback B cannot be marked good or preferred.
    assert!(matches!(fb.mark_good(B), Err(SlotError::Refused { .. })));
    assert!(matches!(fb.prefer(B), Err(SlotError::Refused { .. })));
}

#[test]
fn a_quick_power_cycle_spends_a_try() {
    // rauc#490: the counter drops on every power-on, not on every failed
    // health gate. Two tries, two power cuts before the gate: fallback.
    let (_dir, fb) = fresh();
    fb.arm(B, 2, "1.5.0").unwrap();
    assert_eq!(boots(&fb, 2), [B, B]);
    assert_eq!(fb.status().unwrap().slot(B).tries_left, Some(0));
    assert_eq!(boots(&fb, 1), [A]);
}

#[test]
fn a_disarmed_slot_is_never_booted() {
    let (_dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    // A newer release arrives before the reboot: B is disarmed to be rewritten.
    fb.disarm(B).unwrap();
    assert_eq!(boots(&fb, 4), [A; 4]);
    let st = fb.status().unwrap();
    assert_eq!(
        (st.slot(B).bootable, st.slot(B).version.as_deref()),
        (false, None)
    );
}

#[test]
fn no_operation_leaves_no_good_slot() {
    let (_dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(boots(&fb, 1), [B]);
    // Booted B is on trial; A is the only good slot: hands off A.
    for err in [fb.disarm(A), fb.arm(A, 3, "1.6.0"), fb.disarm(B)] {
        assert!(matches!(err, Err(SlotError::Refused { .. })), "{err:?}");
    }
    assert!(fb.status().unwrap().slot(A).is_good());
    fb.mark_good(B).unwrap();
    fb.disarm(A).unwrap();
    fb.arm(A, 3, "1.6.0").unwrap();
    assert_eq!(boots(&fb, 4), [A, A, A, B]);
}

#[test]
fn mark_good_whose_write_is_lost_reports_an_error() {
    // rauc#1140: mark-good said success although the write had failed.
    let (_dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    fb.simulate_boot().unwrap();
    fb.inject_fault(WriteFault::Lose);
    let err = fb.mark_good(B).unwrap_err();
    assert!(
        matches!(
            err,
            SlotError::NotApplied {
                op: "mark good",
                slot: B,
                ..
            }
        ),
        "{err}"
    );
    fb.inject_fault(WriteFault::Fail);
    assert!(matches!(fb.mark_good(B), Err(SlotError::Io { .. })));
    fb.inject_fault(WriteFault::None);
    assert!(!fb.status().unwrap().slot(B).successful);
    fb.mark_good(B).unwrap();
    assert!(fb.status().unwrap().slot(B).successful);
}

#[test]
fn prefer_rolls_back_to_a_good_slot() {
    let (_dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    fb.simulate_boot().unwrap();
    fb.mark_good(B).unwrap();
    fb.prefer(A).unwrap();
    assert_eq!(fb.status().unwrap().next, A);
    assert_eq!(boots(&fb, 2), [A, A]);
    fb.prefer(B).unwrap();
    assert_eq!(boots(&fb, 1), [B]);
}

#[test]
fn state_survives_reopening_and_ignores_a_leftover_temp_file() {
    let (dir, fb) = fresh();
    fb.arm(B, 3, "1.5.0").unwrap();
    // A crash before the rename leaves the temp file; it is not the state.
    std::fs::write(dir.path().join(".slots.json.tmp"), "{ torn").unwrap();
    let again = FileBackend::new(dir.path()).unwrap();
    assert_eq!(again.status().unwrap(), fb.status().unwrap());
    assert_eq!(again.simulate_boot().unwrap(), B);
}

#[test]
fn a_damaged_state_file_is_an_error_naming_it() {
    let (_dir, fb) = fresh();
    std::fs::write(fb.state_path(), "{\"booted\": \"c\"}").unwrap();
    let err = fb.status().unwrap_err().to_string();
    assert!(err.contains("slots.json"), "{err}");
    assert!(fb.simulate_boot().is_err());
}

/// Random operations (a fixed-seed xorshift, so failures reproduce): after
/// each one some slot is good and a power-on finds something to boot.
#[test]
fn random_operations_never_leave_nothing_to_boot() {
    let (_dir, fb) = fresh();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..2000 {
        let slot = if next() % 2 == 0 { A } else { B };
        let tries = (next() % 4) as u32;
        // Refusals are expected; only the invariant matters.
        let _ = match next() % 5 {
            0 => fb.disarm(slot),
            1 => fb.arm(slot, tries, "9.9.9"),
            2 => fb.mark_good(slot),
            3 => fb.prefer(slot),
            _ => fb.simulate_boot().map(drop),
        };
        let st = fb.status().unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert!(st.slots.iter().any(|s| s.is_good()), "step {step}: {st:?}");
        assert!(st.slot(st.next).bootable, "step {step}: {st:?}");
    }
}

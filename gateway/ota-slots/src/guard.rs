//! The preconditions every backend checks before it touches the bootloader.
//!
//! They live here, once, so the three backends refuse exactly the same
//! operations: each backend reads its [`BootStatus`] and asks these first.
//! The point is the invariant that a good slot always remains: a Jetson left
//! with both rootfs slots unbootable (`RootfsStatusSlot=0xFF`,
//! WendyOS-Builder#41) needs a reflash.

use crate::{BootStatus, Slot, SlotError};

fn refuse(op: &'static str, slot: Slot, reason: impl Into<String>) -> SlotError {
    SlotError::Refused {
        op,
        slot,
        reason: reason.into(),
    }
}

/// The other slot must be good: it is what the bootloader falls back to
/// while `slot` is half-written or on trial.
fn fallback_is_good(st: &BootStatus, op: &'static str, slot: Slot) -> Result<(), SlotError> {
    let other = st.slot(slot.other());
    if other.is_good() {
        return Ok(());
    }
    Err(refuse(
        op,
        slot,
        format!(
            "slot {} is not good (bootable: {}, successful: {}); no slot would remain to fall back to",
            other.slot, other.bootable, other.successful
        ),
    ))
}

pub(crate) fn disarm(st: &BootStatus, slot: Slot) -> Result<(), SlotError> {
    if st.booted == slot {
        return Err(refuse("disarm", slot, "it is the booted slot"));
    }
    fallback_is_good(st, "disarm", slot)
}

pub(crate) fn arm(st: &BootStatus, slot: Slot, tries: u32, version: &str) -> Result<(), SlotError> {
    if st.booted == slot {
        return Err(refuse("arm", slot, "it is the booted slot"));
    }
    if tries == 0 {
        return Err(refuse("arm", slot, "zero boot tries would never boot it"));
    }
    check_version(version)?;
    fallback_is_good(st, "arm", slot)
}

pub(crate) fn mark_good(st: &BootStatus, slot: Slot) -> Result<(), SlotError> {
    if st.booted != slot {
        return Err(refuse(
            "mark good",
            slot,
            format!("only the booted slot ({}) passed a health gate", st.booted),
        ));
    }
    Ok(())
}

pub(crate) fn prefer(st: &BootStatus, slot: Slot) -> Result<(), SlotError> {
    let info = st.slot(slot);
    if info.is_good() {
        return Ok(());
    }
    Err(refuse(
        "prefer",
        slot,
        format!(
            "it is not good (bootable: {}, successful: {})",
            info.bootable, info.successful
        ),
    ))
}

/// Versions end up in boot entry lines and file contents: one token of
/// printable characters that need no quoting anywhere.
pub(crate) fn check_version(version: &str) -> Result<(), SlotError> {
    let ok = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+~^-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SlotError::Parse {
            what: "version",
            value: version.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SlotInfo;

    fn info(slot: Slot, bootable: bool, successful: bool) -> SlotInfo {
        SlotInfo {
            slot,
            bootable,
            successful,
            tries_left: None,
            priority: 0,
            version: None,
        }
    }

    fn status(booted: Slot, a: (bool, bool), b: (bool, bool)) -> BootStatus {
        BootStatus {
            booted,
            slots: [info(Slot::A, a.0, a.1), info(Slot::B, b.0, b.1)],
            next: booted,
        }
    }

    #[test]
    fn the_booted_slot_is_never_disarmed_or_armed() {
        let st = status(Slot::A, (true, true), (true, true));
        assert!(matches!(
            disarm(&st, Slot::A),
            Err(SlotError::Refused { op: "disarm", .. })
        ));
        assert!(matches!(
            arm(&st, Slot::A, 3, "1.0"),
            Err(SlotError::Refused { op: "arm", .. })
        ));
        disarm(&st, Slot::B).unwrap();
        arm(&st, Slot::B, 3, "1.0").unwrap();
    }

    #[test]
    fn nothing_is_touched_while_the_booted_slot_is_on_trial() {
        // Booted B, not yet marked good: A is the only good slot.
        let st = status(Slot::B, (true, true), (true, false));
        disarm(&st, Slot::B).unwrap_err();
        let err = disarm(&status(Slot::B, (true, false), (true, false)), Slot::A).unwrap_err();
        assert!(err.to_string().contains("slot b is not good"), "{err}");
    }

    #[test]
    fn mark_good_only_for_the_booted_slot_and_prefer_only_good_slots() {
        let st = status(Slot::B, (false, false), (true, false));
        mark_good(&st, Slot::B).unwrap();
        mark_good(&st, Slot::A).unwrap_err();
        prefer(&st, Slot::A).unwrap_err();
        prefer(&st, Slot::B).unwrap_err();
        prefer(&status(Slot::B, (true, true), (true, false)), Slot::A).unwrap();
    }

    #[test]
    fn versions_are_single_safe_tokens() {
        check_version("1.5.0-rc.1+g1234").unwrap();
        for bad in ["", "1.0 evil", "1.0\noptions init=/bin/sh", &"9".repeat(65)] {
            check_version(bad).unwrap_err();
        }
        arm(
            &status(Slot::A, (true, true), (false, false)),
            Slot::B,
            0,
            "1.0",
        )
        .unwrap_err();
    }
}

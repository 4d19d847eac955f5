//! NVIDIA Jetson rootfs A/B through `nvbootctrl -t rootfs`.
//!
//! UNTESTED ON HARDWARE. Written from the Jetson Linux Developer Guide
//! ("Update and Redundancy", rootfs A/B and its fail-over) and the tool's
//! observed output, and tested only against a fake `nvbootctrl` script. Slot
//! A is `0`, B is `1`. Commands used:
//! - `get-current-slot`: the booted slot;
//! - `dump-slots-info`: `Active rootfs slot: A|B` (booted next) and per
//!   slot `slot: N, retry_count: R, status: normal|unbootable`;
//! - `is-slot-marked-successful N`: exit status 0 means yes;
//! - `set-active-boot-slot N`: boot N next, on trial;
//! - `mark-boot-successful`: the booted slot passed its health gate.
//!
//! UEFI counts the retries (3 by default) and, when they are spent, marks
//! the slot unbootable and boots the other one. The retry count is the
//! firmware's: [`SlotBackend::arm`]'s `tries` cannot change it.
//!
//! Deliberately never used: marking a slot unbootable. A slot left with
//! `RootfsStatusSlot=0xFF` could not be revived without reflashing
//! (WendyOS-Builder#41), so [`SlotBackend::disarm`] only makes sure the
//! booted slot is the active one. The cost: if the booted slot fails its
//! own retries while the other is half-written, UEFI would try the
//! half-written slot. The updater's image verification must therefore run
//! before [`SlotBackend::arm`], as it does for every backend.

mod tool;

use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::tool::Tool;
use crate::{fsio, guard, BootStatus, Slot, SlotBackend, SlotError, SlotInfo};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvBootCtrlConfig {
    #[serde(default = "default_tool")]
    pub tool: PathBuf,
    /// The firmware's rootfs retry count, for the warning when `arm` asks
    /// for another.
    #[serde(default = "default_retry_max")]
    pub retry_max: u32,
    /// Where the release in each slot is recorded; the firmware keeps none.
    pub versions_file: Option<PathBuf>,
}

fn default_tool() -> PathBuf {
    "/usr/sbin/nvbootctrl".into()
}
fn default_retry_max() -> u32 {
    3
}

impl Default for NvBootCtrlConfig {
    fn default() -> NvBootCtrlConfig {
        NvBootCtrlConfig {
            tool: default_tool(),
            retry_max: default_retry_max(),
            versions_file: None,
        }
    }
}

pub struct NvBootCtrlBackend {
    cfg: NvBootCtrlConfig,
    tool: Tool,
    lock: Mutex<()>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Versions {
    a: Option<String>,
    b: Option<String>,
}

/// What `dump-slots-info` says, per slot: retry count and status.
#[derive(Debug, PartialEq)]
pub(crate) struct Dump {
    active: Slot,
    slots: [(u32, String); 2],
}

impl NvBootCtrlBackend {
    pub fn new(cfg: NvBootCtrlConfig) -> NvBootCtrlBackend {
        let tool = Tool::new(&cfg.tool);
        NvBootCtrlBackend {
            cfg,
            tool,
            lock: Mutex::new(()),
        }
    }

    fn current(&self) -> Result<Slot, SlotError> {
        let args = ["get-current-slot"];
        let out = self.tool.check(&args)?;
        slot_number(out.trim()).ok_or_else(|| self.tool.unexpected(&args, "slot number", &out))
    }

    fn dump(&self) -> Result<Dump, SlotError> {
        let args = ["dump-slots-info"];
        let out = self.tool.check(&args)?;
        parse_dump(&out).map_err(|what| self.tool.unexpected(&args, what, &out))
    }

    fn read_status(&self) -> Result<BootStatus, SlotError> {
        let booted = self.current()?;
        let dump = self.dump()?;
        let versions = self.versions()?;
        let info = |slot: Slot| -> Result<SlotInfo, SlotError> {
            let (retry, status) = &dump.slots[slot.index()];
            let n = slot_arg(slot);
            Ok(SlotInfo {
                slot,
                bootable: status == "normal",
                successful: self.tool.probe(&["is-slot-marked-successful", n])?,
                tries_left: Some(*retry),
                priority: u32::from(dump.active == slot),
                version: match slot {
                    Slot::A => versions.a.clone(),
                    Slot::B => versions.b.clone(),
                },
            })
        };
        let slots = [info(Slot::A)?, info(Slot::B)?];
        // UEFI falls over to the other slot when the active one is unbootable.
        let next = if slots[dump.active.index()].bootable {
            dump.active
        } else {
            dump.active.other()
        };
        Ok(BootStatus {
            booted,
            slots,
            next,
        })
    }

    fn versions(&self) -> Result<Versions, SlotError> {
        let Some(path) = &self.cfg.versions_file else {
            return Ok(Versions::default());
        };
        match fsio::read_bounded(path)? {
            None => Ok(Versions::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| SlotError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }),
        }
    }

    fn record_version(&self, slot: Slot, version: Option<&str>) -> Result<(), SlotError> {
        let Some(path) = &self.cfg.versions_file else {
            return Ok(());
        };
        let mut v = self.versions()?;
        let field = match slot {
            Slot::A => &mut v.a,
            Slot::B => &mut v.b,
        };
        *field = version.map(str::to_owned);
        let json = serde_json::to_vec(&v).map_err(|e| SlotError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fsio::write_atomic(path, &json)
    }

    /// `set-active-boot-slot`. Like Android's boot control it may put the
    /// target on trial again; when the target is the booted slot, which was
    /// good, it is marked successful again at once.
    fn set_active(&self, slot: Slot, st: &BootStatus) -> Result<(), SlotError> {
        self.tool.check(&["set-active-boot-slot", slot_arg(slot)])?;
        if slot == st.booted
            && st.slot(slot).successful
            && !self
                .tool
                .probe(&["is-slot-marked-successful", slot_arg(slot)])?
        {
            self.tool.check(&["mark-boot-successful"])?;
        }
        Ok(())
    }

    fn verify(
        &self,
        op: &'static str,
        slot: Slot,
        ok: impl FnOnce(&BootStatus) -> bool,
    ) -> Result<(), SlotError> {
        let st = self.read_status()?;
        if ok(&st) {
            info!(%slot, op, next = %st.next, "nvbootctrl state changed");
            return Ok(());
        }
        Err(SlotError::NotApplied {
            op,
            slot,
            detail: format!("nvbootctrl reads back {st:?}"),
        })
    }
}

impl SlotBackend for NvBootCtrlBackend {
    fn name(&self) -> &'static str {
        "nvbootctrl"
    }

    fn status(&self) -> Result<BootStatus, SlotError> {
        let _l = self.lock.lock();
        self.read_status()
    }

    fn disarm(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let st = self.read_status()?;
        guard::disarm(&st, slot)?;
        if st.next == slot {
            self.set_active(st.booted, &st)?;
        }
        self.record_version(slot, None)?;
        self.verify("disarm", slot, |now| {
            now.next == st.booted && now.slot(st.booted).is_good()
        })
    }

    fn arm(&self, slot: Slot, tries: u32, version: &str) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let st = self.read_status()?;
        guard::arm(&st, slot, tries, version)?;
        if tries != self.cfg.retry_max {
            warn!(%slot, tries, firmware = self.cfg.retry_max, "nvbootctrl cannot set boot tries; the firmware's retry count applies");
        }
        self.record_version(slot, Some(version))?;
        self.set_active(slot, &st)?;
        // An unbootable slot that set-active-boot-slot did not revive is the
        // 0xFF trap: say so rather than report an armed slot that never boots.
        self.verify("arm", slot, |now| {
            now.next == slot && now.slot(slot).bootable && now.slot(slot.other()).is_good()
        })
    }

    fn mark_good(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let st = self.read_status()?;
        guard::mark_good(&st, slot)?;
        self.tool.check(&["mark-boot-successful"])?;
        self.verify("mark good", slot, |now| now.slot(slot).is_good())
    }

    fn prefer(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let st = self.read_status()?;
        guard::prefer(&st, slot)?;
        self.set_active(slot, &st)?;
        self.verify("prefer", slot, |now| now.next == slot)
    }

    /// UEFI takes one retry from the booted slot at every boot, and
    /// `set-active-boot-slot` (a rollback's) puts the target on trial
    /// again; only `mark-boot-successful` restores the count. An accepted
    /// boot that is not marked, or whose count is below the firmware's,
    /// is marked here, or a working slot would run out of retries.
    fn confirm_boot(&self, slot: Slot) -> Result<bool, SlotError> {
        let _l = self.lock.lock();
        let st = self.read_status()?;
        if st.booted != slot {
            return Err(SlotError::NotApplied {
                op: "confirm boot",
                slot,
                detail: format!("slot {} is the booted one", st.booted),
            });
        }
        let info = st.slot(slot);
        if info.successful && info.tries_left.is_none_or(|t| t >= self.cfg.retry_max) {
            return Ok(false);
        }
        self.tool.check(&["mark-boot-successful"])?;
        self.verify("confirm boot", slot, |now| now.slot(slot).is_good())?;
        Ok(true)
    }
}

fn slot_arg(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "0",
        Slot::B => "1",
    }
}

fn slot_number(s: &str) -> Option<Slot> {
    match s {
        "0" | "A" => Some(Slot::A),
        "1" | "B" => Some(Slot::B),
        _ => None,
    }
}

/// Parses `dump-slots-info -t rootfs`; unknown lines and fields are skipped
/// so that a newer release's extra output does not break us.
pub(crate) fn parse_dump(out: &str) -> Result<Dump, &'static str> {
    let mut active = None;
    let mut slots: [Option<(u32, String)>; 2] = [None, None];
    for line in out.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Active rootfs slot:") {
            active = Some(slot_number(v.trim()).ok_or("active slot")?);
        } else if line.starts_with("slot:") {
            let field = |key: &str| {
                line.split(',').find_map(|f| {
                    f.trim()
                        .strip_prefix(key)
                        .and_then(|v| v.strip_prefix(':'))
                        .map(str::trim)
                })
            };
            let slot = field("slot").and_then(slot_number).ok_or("slot number")?;
            let retry = field("retry_count")
                .and_then(|r| r.parse().ok())
                .ok_or("retry_count")?;
            let status = field("status").ok_or("status")?;
            slots[slot.index()] = Some((retry, status.to_owned()));
        }
    }
    let [Some(a), Some(b)] = slots else {
        return Err("both slots listed");
    };
    Ok(Dump {
        active: active.ok_or("Active rootfs slot")?,
        slots: [a, b],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_slots_info_as_jetson_linux_prints_it() {
        let out = "Current rootfs slot: B\nActive rootfs slot: B\nnum_slots: 2\n\
                   slot: 0,             retry_count: 0,             status: unbootable\n\
                   slot: 1,             retry_count: 3,             status: normal\n";
        let dump = parse_dump(out).unwrap();
        assert_eq!(
            dump,
            Dump {
                active: Slot::B,
                slots: [(0, "unbootable".into()), (3, "normal".into())]
            }
        );
    }

    #[test]
    fn dump_slots_info_that_is_not_understood_is_an_error() {
        assert_eq!(
            parse_dump("Active rootfs slot: A\nslot: 0, retry_count: 3, status: normal\n"),
            Err("both slots listed")
        );
        assert_eq!(parse_dump("Active rootfs slot: C\n"), Err("active slot"));
        assert_eq!(
            parse_dump("Active rootfs slot: A\nslot: 0, retry_count: x, status: normal\n"),
            Err("retry_count")
        );
        let no_active =
            "slot: 0, retry_count: 3, status: normal\nslot: 1, retry_count: 3, status: normal\n";
        assert_eq!(parse_dump(no_active), Err("Active rootfs slot"));
    }

    #[test]
    fn extra_fields_are_skipped() {
        let out = "Active rootfs slot: A\nslot: 0, priority: 15, retry_count: 2, status: normal\nslot: 1, retry_count: 3, status: normal, extra: x\n";
        assert_eq!(parse_dump(out).unwrap().slots[0], (2, "normal".into()));
    }
}

//! A/B root slot switching for the OTA updater, behind one trait.
//!
//! The updater drives a [`SlotBackend`] in this order for every update:
//! [`disarm`](SlotBackend::disarm) the inactive slot, write and verify its
//! image, [`arm`](SlotBackend::arm) it with a number of boot tries, reboot;
//! after the health gate passes, [`mark_good`](SlotBackend::mark_good). If
//! the tries run out the bootloader itself falls back to the other slot.
//!
//! Backends:
//! - [`FileBackend`]: state in one JSON file, plus
//!   [`FileBackend::simulate_boot`], a counting bootloader for tests.
//! - [`SystemdBootBackend`]: Boot Loader Specification entries with
//!   systemd-boot's boot counting in the file names.
//! - [`NvBootCtrlBackend`]: NVIDIA Jetson through `nvbootctrl -t rootfs`.
//!   UNTESTED ON HARDWARE.
//!
//! **Invariant:** no operation leaves the bootloader without a slot that is
//! both bootable and marked good (the Jetson `RootfsStatusSlot=0xFF` trap):
//! [`disarm`](SlotBackend::disarm) and [`arm`](SlotBackend::arm) are refused
//! unless the *other* slot is good, and the booted slot is never disarmed.
//!
//! **Invariant:** every write is crash-safe (temp file, fsync, rename, fsync
//! of the directory) and read back before an operation reports success.
#![forbid(unsafe_code)]

mod config;
mod file;
mod fsio;
mod guard;
mod nvbootctrl;
mod systemd_boot;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use config::{from_config, BackendConfig};
pub use file::{FileBackend, FileConfig, WriteFault};
pub use nvbootctrl::{NvBootCtrlBackend, NvBootCtrlConfig};
pub use systemd_boot::{booted_from_cmdline, SystemdBootBackend, SystemdBootConfig};

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The lower-case letter used on kernel command lines and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = SlotError;

    /// Accepts either case: `nusa-ota-core` prints slots as `A`/`B`.
    fn from_str(s: &str) -> Result<Slot, SlotError> {
        match s {
            "a" | "A" => Ok(Slot::A),
            "b" | "B" => Ok(Slot::B),
            _ => Err(SlotError::Parse {
                what: "slot",
                value: s.to_owned(),
            }),
        }
    }
}

/// What the bootloader knows about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub slot: Slot,
    /// The bootloader may pick this slot (it holds a complete, armed image).
    pub bootable: bool,
    /// The slot passed its health gate; it is no longer on trial.
    pub successful: bool,
    /// Boot attempts left while on trial. The Jetson backend reports its
    /// firmware's retry counter here for every slot.
    pub tries_left: Option<u32>,
    /// Higher boots first among bootable slots; only the order means anything.
    pub priority: u32,
    /// The release written into the slot, where the backend records it.
    pub version: Option<String>,
}

impl SlotInfo {
    /// Bootable and past its health gate: a slot the system can fall back to.
    pub fn is_good(&self) -> bool {
        self.bootable && self.successful
    }
}

/// The bootloader's view of both slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootStatus {
    /// The slot the running system was booted from.
    pub booted: Slot,
    /// Indexed by slot: `slots[0]` is A, `slots[1]` is B.
    pub slots: [SlotInfo; 2],
    /// The slot the bootloader will boot on the next power-on.
    pub next: Slot,
}

impl BootStatus {
    pub fn slot(&self, slot: Slot) -> &SlotInfo {
        &self.slots[slot.index()]
    }
}

/// A/B slot switching as one bootloader does it.
///
/// Every method reads the bootloader's state afresh: the bootloader changes
/// it behind our back (counting tries, falling back) between boots.
pub trait SlotBackend: Send + Sync {
    /// The name [`from_config`] selects it by.
    fn name(&self) -> &'static str;

    fn status(&self) -> Result<BootStatus, SlotError>;

    /// Before writing `slot`: make sure the bootloader will not pick it, so
    /// a half-written slot is never booted. Refused for the booted slot and
    /// when the other slot is not good.
    fn disarm(&self, slot: Slot) -> Result<(), SlotError>;

    /// After the slot's image is written and verified: boot it next with
    /// `tries` attempts; when they all fail the bootloader falls back to the
    /// other slot by itself. Written last, atomically.
    fn arm(&self, slot: Slot, tries: u32, version: &str) -> Result<(), SlotError>;

    /// The booted slot passed its health gate: keep booting it. Fails unless
    /// the bootloader's state was read back and shows the mark (rauc#1140).
    fn mark_good(&self, slot: Slot) -> Result<(), SlotError>;

    /// Operator rollback: boot `slot` next. It must be bootable and good.
    fn prefer(&self, slot: Slot) -> Result<(), SlotError>;

    /// A boot the updater accepts (nothing on trial, a transfer to the
    /// other slot in progress, or back on the good slot after an update
    /// failed): tell a bootloader that counts every
    /// boot that this one succeeded, so that its counter does not run out
    /// on a slot that works. Returns whether anything was written. The
    /// default does nothing: systemd-boot's entries without a counter are
    /// permanent.
    fn confirm_boot(&self, _slot: Slot) -> Result<bool, SlotError> {
        Ok(false)
    }
}

/// Errors of every slot operation; each names the file, command or slot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid {what} {value:?}")]
    Parse { what: &'static str, value: String },
    #[error("refusing to {op} slot {slot}: {reason}")]
    Refused {
        op: &'static str,
        slot: Slot,
        reason: String,
    },
    #[error("{op} slot {slot} did not take effect: {detail}")]
    NotApplied {
        op: &'static str,
        slot: Slot,
        detail: String,
    },
    #[error("`{command}`: {detail}")]
    Command { command: String, detail: String },
    #[error("no bootable slot: the bootloader has nothing to boot")]
    NoBootableSlot,
    #[error("slot backend configuration: {0}")]
    Config(String),
}

/// The boot entry parsers, for the `boot_entries` fuzz target and its
/// regression tests; not an API. `data`: NUL-separated fields, the kernel
/// command line, `nvbootctrl dump-slots-info` output, then systemd-boot
/// entries as (file name, text) pairs. Parses them all and sorts the
/// entries in boot order; panics only on a bug.
#[doc(hidden)]
pub fn fuzz_boot_entries(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let cmdline = fields.next().unwrap_or("");
    let dump = fields.next().unwrap_or("");
    let rest: Vec<&str> = fields.collect();
    let entries: Vec<(&str, &str)> = rest
        .chunks(2)
        .map(|p| (p[0], p.get(1).copied().unwrap_or("")))
        .collect();
    let order = systemd_boot::entries_from(&entries);
    let _ = systemd_boot::booted_from_cmdline(cmdline);
    let _ = nvbootctrl::parse_dump(dump);
    assert!(order.len() <= entries.len());
}

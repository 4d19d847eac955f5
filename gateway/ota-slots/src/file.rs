//! A slot backend whose "bootloader" is one JSON file, for tests and for the
//! QEMU-free test matrix of the updater.
//!
//! It models a counting bootloader the way GRUB/U-Boot setups under RAUC,
//! Android's boot control and Jetson's UEFI behave, including their traps:
//! - every power-on of a slot on trial spends a try, even a quick power
//!   cycle before the health gate ran (rauc#490);
//! - a trial slot whose tries are spent is retired and the good slot boots;
//! - a disarmed slot is never booted;
//! - no operation may leave no good slot (guarded in [`crate::guard`]).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{fsio, guard, BootStatus, Slot, SlotBackend, SlotError, SlotInfo};

const STATE_FILE: &str = "slots.json";

/// Where the [`FileBackend`] keeps its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub dir: PathBuf,
}

/// Fault injection for tests: how the next state writes misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteFault {
    #[default]
    None,
    /// Writes fail with an I/O error.
    Fail,
    /// Writes report success but never reach the file, like a bootloader
    /// environment write that is acknowledged and lost (rauc#1140).
    Lose,
}

/// State in `<dir>/slots.json`; see the module docs for the boot model.
pub struct FileBackend {
    path: PathBuf,
    /// Serializes read-modify-write cycles and holds the injected fault.
    fault: Mutex<WriteFault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    booted: Slot,
    slots: [SlotInfo; 2],
    /// Power-ons simulated so far; lets tests tell boots apart.
    boots: u64,
}

impl FileBackend {
    /// Opens the state in `dir`, creating a fresh one when there is none: A
    /// booted and good, B empty.
    pub fn new(dir: &Path) -> Result<FileBackend, SlotError> {
        let backend = FileBackend {
            path: dir.join(STATE_FILE),
            fault: Mutex::new(WriteFault::None),
        };
        if fsio::read_bounded(&backend.path)?.is_none() {
            let empty = |slot| SlotInfo {
                slot,
                bootable: false,
                successful: false,
                tries_left: None,
                priority: 0,
                version: None,
            };
            let a = SlotInfo {
                bootable: true,
                successful: true,
                priority: 1,
                ..empty(Slot::A)
            };
            fsio::write_atomic(
                &backend.path,
                &to_json(&State {
                    booted: Slot::A,
                    slots: [a, empty(Slot::B)],
                    boots: 0,
                }),
            )?;
        }
        Ok(backend)
    }

    pub fn state_path(&self) -> &Path {
        &self.path
    }

    pub fn inject_fault(&self, fault: WriteFault) {
        *self.fault.lock() = fault;
    }

    /// What a counting bootloader does at power-on: retire a trial slot
    /// with no tries left, pick the highest-priority slot that is good or
    /// still has tries, spend one of its tries, and boot it. The spent try is
    /// written before "booting", so a power cut right after counts.
    pub fn simulate_boot(&self) -> Result<Slot, SlotError> {
        let fault = self.fault.lock();
        let mut st = self.load()?;
        for info in &mut st.slots {
            if info.bootable && !info.successful && info.tries_left == Some(0) {
                info.bootable = false;
            }
        }
        let slot = pick(&st.slots).ok_or(SlotError::NoBootableSlot)?;
        let info = &mut st.slots[slot.index()];
        if !info.successful {
            info.tries_left = info.tries_left.map(|t| t.saturating_sub(1));
        }
        st.booted = slot;
        st.boots += 1;
        self.store(*fault, &st)?;
        info!(%slot, tries_left = ?st.slots[slot.index()].tries_left, "simulated boot");
        Ok(slot)
    }

    fn load(&self) -> Result<State, SlotError> {
        let corrupt = |reason: String| SlotError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let text = fsio::read_bounded(&self.path)?
            .ok_or_else(|| corrupt("state file is missing".into()))?;
        let st: State = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if st.slots[0].slot != Slot::A || st.slots[1].slot != Slot::B {
            return Err(corrupt("slots must be listed as a, b".into()));
        }
        Ok(st)
    }

    fn store(&self, fault: WriteFault, st: &State) -> Result<(), SlotError> {
        match fault {
            WriteFault::None => fsio::write_atomic(&self.path, &to_json(st)),
            WriteFault::Fail => Err(SlotError::Io {
                op: "writing",
                path: self.path.clone(),
                source: std::io::Error::other("injected write fault"),
            }),
            WriteFault::Lose => Ok(()),
        }
    }

    /// Applies `change` under the lock after `check` accepted the current
    /// status, then reads the file back: success means it is on disk.
    fn update(
        &self,
        op: &'static str,
        slot: Slot,
        check: impl FnOnce(&BootStatus) -> Result<(), SlotError>,
        change: impl FnOnce(&mut State),
    ) -> Result<(), SlotError> {
        let fault = self.fault.lock();
        let mut st = self.load()?;
        check(&status_of(&st)?)?;
        change(&mut st);
        self.store(*fault, &st)?;
        let back = self.load()?;
        if back != st {
            return Err(SlotError::NotApplied {
                op,
                slot,
                detail: format!(
                    "{} read back differs from what was written",
                    self.path.display()
                ),
            });
        }
        info!(%slot, op, "slot state written");
        Ok(())
    }
}

impl SlotBackend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn status(&self) -> Result<BootStatus, SlotError> {
        let _serialized = self.fault.lock();
        status_of(&self.load()?)
    }

    fn disarm(&self, slot: Slot) -> Result<(), SlotError> {
        self.update(
            "disarm",
            slot,
            |st| guard::disarm(st, slot),
            |st| {
                st.slots[slot.index()] = SlotInfo {
                    slot,
                    bootable: false,
                    successful: false,
                    tries_left: None,
                    priority: 0,
                    version: None,
                };
            },
        )
    }

    fn arm(&self, slot: Slot, tries: u32, version: &str) -> Result<(), SlotError> {
        self.update(
            "arm",
            slot,
            |st| guard::arm(st, slot, tries, version),
            |st| {
                let priority = st.slots[slot.other().index()].priority.saturating_add(1);
                st.slots[slot.index()] = SlotInfo {
                    slot,
                    bootable: true,
                    successful: false,
                    tries_left: Some(tries),
                    priority,
                    version: Some(version.to_owned()),
                };
            },
        )
    }

    fn mark_good(&self, slot: Slot) -> Result<(), SlotError> {
        self.update(
            "mark good",
            slot,
            |st| guard::mark_good(st, slot),
            |st| {
                let info = &mut st.slots[slot.index()];
                info.bootable = true;
                info.successful = true;
                info.tries_left = None;
            },
        )
    }

    fn prefer(&self, slot: Slot) -> Result<(), SlotError> {
        self.update(
            "prefer",
            slot,
            |st| guard::prefer(st, slot),
            |st| {
                let other = st.slots[slot.other().index()].priority;
                let info = &mut st.slots[slot.index()];
                info.priority = info.priority.max(other.saturating_add(1));
            },
        )
    }
}

fn status_of(st: &State) -> Result<BootStatus, SlotError> {
    let next = pick(&st.slots).ok_or(SlotError::NoBootableSlot)?;
    Ok(BootStatus {
        booted: st.booted,
        slots: st.slots.clone(),
        next,
    })
}

/// The slot a power-on would boot: highest priority among those that are
/// good or still have tries; A wins a tie.
fn pick(slots: &[SlotInfo; 2]) -> Option<Slot> {
    let bootable =
        |i: &SlotInfo| i.bootable && (i.successful || i.tries_left.is_some_and(|t| t > 0));
    let mut order = [&slots[0], &slots[1]];
    order.sort_by_key(|i| std::cmp::Reverse(i.priority));
    order.into_iter().find(|i| bootable(i)).map(|i| i.slot)
}

fn to_json(st: &State) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    let mut out = serde_json::to_vec_pretty(st).unwrap_or_default();
    out.push(b'\n');
    out
}

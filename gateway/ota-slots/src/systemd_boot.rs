//! systemd-boot with automatic boot assessment (boot counting in entry file
//! names), for x86_64 appliances.
//!
//! One Boot Loader Specification entry per slot in `<esp>/loader/entries/`:
//! - good: `nusa-a.conf` (no counter);
//! - on trial: `nusa-b+3.conf`; systemd-boot renames it on every attempt
//!   (`+2-1`, `+1-2`, `+0-3`) and sorts an entry with no tries left after
//!   all others, so the good slot boots once the tries are spent;
//! - disarmed: no entry at all.
//!
//! Both entries carry `sort-key nusa`; the `version` line's generation
//! decides which boots first (see [`entry`]). The booted slot comes from
//! the kernel command line (`nusa.slot=`), which each entry's `options` set.
//!
//! Nothing else may pin the default entry: `default` in `loader.conf` or the
//! `LoaderEntryDefault` EFI variable (`bootctl set-default`) would override
//! the order this backend relies on.

mod entry;

use std::fs;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tracing::info;

use self::entry::Entry;
use crate::{fsio, guard, BootStatus, Slot, SlotBackend, SlotError, SlotInfo};

/// Where the ESP is and what each slot's entry boots. `{slot}` in the
/// templates becomes `a` or `b`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdBootConfig {
    /// The ESP's mount point; entries go to `<esp>/loader/entries/`.
    pub esp: PathBuf,
    /// Kernel path on the ESP; must contain `{slot}` so that writing one
    /// slot's kernel never touches the other's.
    #[serde(default = "default_linux")]
    pub linux: String,
    #[serde(default = "default_initrd")]
    pub initrd: Vec<String>,
    /// Kernel command line; must contain `nusa.slot={slot}`.
    #[serde(default = "default_options")]
    pub options: String,
    /// Where the running kernel's command line is read from.
    #[serde(default = "default_cmdline")]
    pub cmdline: PathBuf,
}

fn default_linux() -> String {
    "/nusa/{slot}/vmlinuz".into()
}
fn default_initrd() -> Vec<String> {
    vec!["/nusa/{slot}/initrd.img".into()]
}
fn default_options() -> String {
    "root=PARTLABEL=root-{slot} nusa.slot={slot} ro".into()
}
fn default_cmdline() -> PathBuf {
    "/proc/cmdline".into()
}

impl SystemdBootConfig {
    pub fn new(esp: impl Into<PathBuf>) -> SystemdBootConfig {
        SystemdBootConfig {
            esp: esp.into(),
            linux: default_linux(),
            initrd: default_initrd(),
            options: default_options(),
            cmdline: default_cmdline(),
        }
    }
}

pub struct SystemdBootBackend {
    cfg: SystemdBootConfig,
    dir: PathBuf,
    /// Serializes read-modify-write cycles within this process.
    lock: Mutex<()>,
}

impl SystemdBootBackend {
    pub fn new(cfg: SystemdBootConfig) -> Result<SystemdBootBackend, SlotError> {
        if !cfg.options.contains("nusa.slot={slot}") {
            return Err(SlotError::Config(
                "systemd-boot options must contain nusa.slot={slot}".into(),
            ));
        }
        if !cfg.linux.contains("{slot}") {
            return Err(SlotError::Config(
                "systemd-boot linux path must contain {slot}".into(),
            ));
        }
        let dir = cfg.esp.join("loader").join("entries");
        Ok(SystemdBootBackend {
            cfg,
            dir,
            lock: Mutex::new(()),
        })
    }

    pub fn entries_dir(&self) -> &Path {
        &self.dir
    }

    /// First installation (image build or factory): a good entry for
    /// `slot`. Refused when any of our entries exists already.
    pub fn provision(&self, slot: Slot, version: &str) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        guard::check_version(version)?;
        fs::create_dir_all(&self.dir).map_err(|source| SlotError::Io {
            op: "creating",
            path: self.dir.clone(),
            source,
        })?;
        if !self.entries()?.is_empty() {
            return Err(SlotError::Refused {
                op: "provision",
                slot,
                reason: "boot entries exist already".into(),
            });
        }
        self.write_entry(&Entry::blessed_name(slot), slot, 1, version)
    }

    /// Our entries, in the order systemd-boot would try them.
    fn entries(&self) -> Result<Vec<Entry>, SlotError> {
        let io = |op, source| SlotError::Io {
            op,
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for dirent in fs::read_dir(&self.dir).map_err(|e| io("listing", e))? {
            let name = dirent.map_err(|e| io("listing", e))?.file_name();
            let Some((slot, counter)) = name.to_str().and_then(Entry::from_file_name) else {
                continue;
            };
            let file = name.to_string_lossy().into_owned();
            // Gone between listing and reading: a concurrent rename, not ours to judge.
            let Some(text) = fsio::read_bounded(&self.dir.join(&file))? else {
                continue;
            };
            let (generation, release) = entry::parse_version(&text);
            out.push(Entry {
                slot,
                file,
                counter,
                generation,
                release,
            });
        }
        out.sort_by(entry::boot_order);
        Ok(out)
    }

    fn booted(&self) -> Result<Slot, SlotError> {
        let path = &self.cfg.cmdline;
        let text = fsio::read_bounded(path)?.unwrap_or_default();
        booted_from_cmdline(&text).ok_or_else(|| SlotError::Corrupt {
            path: path.clone(),
            reason: "no nusa.slot= or root=PARTLABEL=...-a|-b on the kernel command line".into(),
        })
    }

    fn read_status(&self) -> Result<(BootStatus, Vec<Entry>), SlotError> {
        let entries = self.entries()?;
        let next = entries
            .first()
            .map(|e| e.slot)
            .ok_or(SlotError::NoBootableSlot)?;
        let info = |slot: Slot| match entries.iter().find(|e| e.slot == slot) {
            Some(e) => SlotInfo {
                slot,
                bootable: !e.is_bad(),
                successful: e.counter.is_none(),
                tries_left: e.counter.map(|c| c.left),
                priority: u32::try_from(e.generation).unwrap_or(u32::MAX),
                version: e.release.clone(),
            },
            None => SlotInfo {
                slot,
                bootable: false,
                successful: false,
                tries_left: None,
                priority: 0,
                version: None,
            },
        };
        let st = BootStatus {
            booted: self.booted()?,
            slots: [info(Slot::A), info(Slot::B)],
            next,
        };
        Ok((st, entries))
    }

    fn write_entry(
        &self,
        file: &str,
        slot: Slot,
        generation: u64,
        version: &str,
    ) -> Result<(), SlotError> {
        let c = &self.cfg;
        let text = entry::render(slot, generation, version, &c.linux, &c.initrd, &c.options);
        fsio::write_atomic(&self.dir.join(file), text.as_bytes())
    }

    fn remove_entries(&self, entries: &[Entry], slot: Slot) -> Result<(), SlotError> {
        for e in entries.iter().filter(|e| e.slot == slot) {
            fsio::remove_durable(&self.dir.join(&e.file))?;
        }
        Ok(())
    }

    /// Reads the entries back and checks `ok`; success means it is on the ESP.
    fn verify(
        &self,
        op: &'static str,
        slot: Slot,
        ok: impl FnOnce(&BootStatus) -> bool,
    ) -> Result<(), SlotError> {
        let (st, entries) = self.read_status()?;
        if ok(&st) {
            info!(%slot, op, next = %st.next, "boot entries written");
            return Ok(());
        }
        let files: Vec<&str> = entries.iter().map(|e| e.file.as_str()).collect();
        Err(SlotError::NotApplied {
            op,
            slot,
            detail: format!("entries in {} read back as {files:?}", self.dir.display()),
        })
    }
}

impl SlotBackend for SystemdBootBackend {
    fn name(&self) -> &'static str {
        "systemd-boot"
    }

    fn status(&self) -> Result<BootStatus, SlotError> {
        let _l = self.lock.lock();
        Ok(self.read_status()?.0)
    }

    fn disarm(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let (st, entries) = self.read_status()?;
        guard::disarm(&st, slot)?;
        self.remove_entries(&entries, slot)?;
        self.verify("disarm", slot, |st| {
            !st.slot(slot).bootable && st.slot(slot).tries_left.is_none()
        })
    }

    fn arm(&self, slot: Slot, tries: u32, version: &str) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let (st, entries) = self.read_status()?;
        guard::arm(&st, slot, tries, version)?;
        let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
        // A stale entry (say, a bad one from the last failed update) goes
        // first; the new counted entry is the last write.
        self.remove_entries(&entries, slot)?;
        self.write_entry(&Entry::counted_name(slot, tries), slot, generation, version)?;
        self.verify("arm", slot, |st| {
            let i = st.slot(slot);
            st.next == slot && i.tries_left == Some(tries) && i.version.as_deref() == Some(version)
        })
    }

    fn mark_good(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let (st, entries) = self.read_status()?;
        guard::mark_good(&st, slot)?;
        let Some(e) = entries.iter().find(|e| e.slot == slot) else {
            return Err(SlotError::NotApplied {
                op: "mark good",
                slot,
                detail: "the booted slot has no boot entry".into(),
            });
        };
        if e.counter.is_some() {
            // What systemd-bless-boot does: drop both counters from the name.
            fsio::rename_durable(
                &self.dir.join(&e.file),
                &self.dir.join(Entry::blessed_name(slot)),
            )?;
        }
        self.verify("mark good", slot, |st| st.slot(slot).is_good())
    }

    fn prefer(&self, slot: Slot) -> Result<(), SlotError> {
        let _l = self.lock.lock();
        let (st, entries) = self.read_status()?;
        guard::prefer(&st, slot)?;
        if st.next != slot {
            let generation = entries.iter().map(|e| e.generation).max().unwrap_or(0) + 1;
            let version = st
                .slot(slot)
                .version
                .clone()
                .unwrap_or_else(|| "unknown".into());
            self.write_entry(&Entry::blessed_name(slot), slot, generation, &version)?;
        }
        self.verify("prefer", slot, |st| st.next == slot)
    }
}

/// What `entries` makes of a folder holding these (file name, text) pairs,
/// without the folder: for `crate::fuzz_boot_entries`.
pub(crate) fn entries_from(found: &[(&str, &str)]) -> Vec<String> {
    let mut out: Vec<Entry> = found
        .iter()
        .filter_map(|&(file, text)| {
            let (slot, counter) = Entry::from_file_name(file)?;
            let (generation, release) = entry::parse_version(text);
            Some(Entry {
                slot,
                file: file.to_owned(),
                counter,
                generation,
                release,
            })
        })
        .collect();
    out.sort_by(entry::boot_order);
    out.into_iter().map(|e| e.file).collect()
}

/// `nusa.slot=` wins; else a `root=PARTLABEL=` ending in `-a`/`-b`. The
/// last occurrence counts, as for the kernel.
/// The slot a kernel command line booted: `nusa.slot=`, else the suffix
/// of `root=PARTLABEL=...-a`.
pub fn booted_from_cmdline(cmdline: &str) -> Option<Slot> {
    let last = |key: &str| {
        cmdline
            .split_whitespace()
            .filter_map(|t| t.strip_prefix(key))
            .next_back()
    };
    if let Some(v) = last("nusa.slot=") {
        return v.parse().ok();
    }
    let label = last("root=PARTLABEL=")?;
    let (_, suffix) = label.rsplit_once('-')?;
    suffix.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booted_slot_from_the_command_line() {
        assert_eq!(
            booted_from_cmdline("root=PARTLABEL=root-a nusa.slot=b ro\n"),
            Some(Slot::B)
        );
        assert_eq!(
            booted_from_cmdline("root=PARTLABEL=root-b ro quiet"),
            Some(Slot::B)
        );
        assert_eq!(
            booted_from_cmdline("nusa.slot=a nusa.slot=b"),
            Some(Slot::B)
        );
        assert_eq!(
            booted_from_cmdline("nusa.slot=c root=PARTLABEL=root-a"),
            None
        );
        assert_eq!(booted_from_cmdline("root=/dev/sda2 ro"), None);
    }

    #[test]
    fn templates_must_name_the_slot() {
        let mut cfg = SystemdBootConfig::new("/boot/efi");
        cfg.options = "root=PARTLABEL=root-{slot} ro".into();
        assert!(matches!(
            SystemdBootBackend::new(cfg.clone()),
            Err(SlotError::Config(_))
        ));
        cfg.options = default_options();
        cfg.linux = "/vmlinuz".into();
        assert!(matches!(
            SystemdBootBackend::new(cfg),
            Err(SlotError::Config(_))
        ));
    }
}

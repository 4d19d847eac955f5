//! The systemd-boot backend on a temp-dir ESP, booted by an emulation of
//! systemd-boot's boot counting written here from its documentation
//! (Boot Loader Specification, systemd.io/AUTOMATIC_BOOT_ASSESSMENT), not
//! from the backend's own code, so the two check each other.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::fs;
use std::path::{Path, PathBuf};

use nusa_ota_slots::{Slot, SlotBackend, SlotError, SystemdBootBackend, SystemdBootConfig};

const A: Slot = Slot::A;
const B: Slot = Slot::B;

struct Esp {
    _dir: tempfile::TempDir,
    entries: PathBuf,
    cmdline: PathBuf,
    backend: SystemdBootBackend,
}

/// An ESP with slot A provisioned and booted.
fn esp() -> Esp {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = SystemdBootConfig::new(dir.path().join("esp"));
    cfg.cmdline = dir.path().join("cmdline");
    fs::write(&cfg.cmdline, "root=PARTLABEL=root-a nusa.slot=a ro\n").unwrap();
    let backend = SystemdBootBackend::new(cfg.clone()).unwrap();
    backend.provision(A, "1.4.2").unwrap();
    let entries = backend.entries_dir().to_path_buf();
    Esp {
        _dir: dir,
        entries,
        cmdline: cfg.cmdline,
        backend,
    }
}

impl Esp {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.entries)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn power_on(&self) -> Slot {
        power_on(&self.entries, &self.cmdline)
    }

    fn power_ons(&self, n: usize) -> Vec<Slot> {
        (0..n).map(|_| self.power_on()).collect()
    }
}

/// One loaded `*.conf` entry as systemd-boot sees it.
struct Loaded {
    file: String,
    id: String,
    left: Option<u32>,
    done: u32,
    sort_key: Option<String>,
    version: String,
    options: String,
}

/// systemd-boot at power-on: load `*.conf`, sort, boot the first entry; a
/// counted entry is renamed `+LEFT-DONE` -> `+(LEFT-1)-(DONE+1)` before
/// booting. The "kernel" then sees the entry's `options` as its command line.
fn power_on(entries: &Path, cmdline: &Path) -> Slot {
    let mut loaded: Vec<Loaded> = fs::read_dir(entries)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".conf"))
        .map(|file| {
            let stem = file.strip_suffix(".conf").unwrap().to_owned();
            let (id, left, done) = match stem.rsplit_once('+') {
                Some((id, c)) => {
                    let (l, d) = c.split_once('-').unwrap_or((c, "0"));
                    (id.to_owned(), Some(l.parse().unwrap()), d.parse().unwrap())
                }
                None => (stem, None, 0),
            };
            let text = fs::read_to_string(entries.join(&file)).unwrap();
            let key = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()))
            };
            Loaded {
                sort_key: key("sort-key "),
                version: key("version ").unwrap_or_default(),
                options: key("options ").unwrap_or_default(),
                file,
                id,
                left,
                done,
            }
        })
        .collect();
    // Entries with no tries left go last; those with a sort-key before those
    // without; sort-key ascending; version newest first (our versions start
    // with a number, compared as a number); id descending; more tries left
    // first; fewer tries done first.
    let lead = |v: &str| {
        v.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .parse::<u64>()
            .unwrap_or(0)
    };
    loaded.sort_by(|a, b| {
        (a.left == Some(0))
            .cmp(&(b.left == Some(0)))
            .then(a.sort_key.is_none().cmp(&b.sort_key.is_none()))
            .then(a.sort_key.cmp(&b.sort_key))
            .then(lead(&b.version).cmp(&lead(&a.version)))
            .then(b.id.cmp(&a.id))
            .then(b.left.cmp(&a.left))
            .then(a.done.cmp(&b.done))
    });
    let first = loaded.first().expect("systemd-boot found no entry");
    if let Some(left) = first.left.filter(|l| *l > 0) {
        let renamed = format!("{}+{}-{}.conf", first.id, left - 1, first.done + 1);
        fs::rename(entries.join(&first.file), entries.join(renamed)).unwrap();
    }
    fs::write(cmdline, format!("{}\n", first.options)).unwrap();
    let slot = first
        .options
        .split_whitespace()
        .find_map(|t| t.strip_prefix("nusa.slot="))
        .unwrap();
    slot.parse().unwrap()
}

#[test]
fn provisioned_slot_a_is_good_and_booted() {
    let esp = esp();
    assert_eq!(esp.names(), ["nusa-a.conf"]);
    let st = esp.backend.status().unwrap();
    assert_eq!(
        (st.booted, st.next, st.slot(A).version.as_deref()),
        (A, A, Some("1.4.2"))
    );
    assert!(st.slot(A).is_good() && !st.slot(B).bootable);
    let text = fs::read_to_string(esp.entries.join("nusa-a.conf")).unwrap();
    assert!(
        text.contains("linux /nusa/a/vmlinuz\n") && text.contains("initrd /nusa/a/initrd.img\n"),
        "{text}"
    );
    assert!(matches!(
        esp.backend.provision(B, "1.4.2"),
        Err(SlotError::Refused { .. })
    ));
}

#[test]
fn failed_boots_count_down_and_fall_back_to_a() {
    let esp = esp();
    esp.backend.disarm(B).unwrap();
    esp.backend.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b+3.conf"]);
    assert_eq!(esp.power_on(), B);
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b+2-1.conf"]);
    let st = esp.backend.status().unwrap();
    assert_eq!(
        (st.booted, st.slot(B).tries_left, st.slot(B).successful),
        (B, Some(2), false)
    );
    assert_eq!(esp.power_ons(2), [B, B]);
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b+0-3.conf"]);
    // No tries left: B sorts last and A boots, from now on.
    assert_eq!(esp.power_ons(2), [A, A]);
    assert_eq!(
        fs::read_to_string(&esp.cmdline).unwrap(),
        "root=PARTLABEL=root-a nusa.slot=a ro\n"
    );
    let st = esp.backend.status().unwrap();
    assert_eq!((st.booted, st.next, st.slot(B).bootable), (A, A, false));
    assert!(matches!(
        esp.backend.prefer(B),
        Err(SlotError::Refused { .. })
    ));
    // The next attempt replaces the bad entry instead of adding a second one.
    esp.backend.arm(B, 3, "1.5.1").unwrap();
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b+3.conf"]);
}

#[test]
fn a_blessed_entry_keeps_booting_and_prefer_rolls_back() {
    let esp = esp();
    esp.backend.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(esp.power_on(), B);
    esp.backend.mark_good(B).unwrap();
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b.conf"]);
    assert_eq!(esp.power_ons(4), [B; 4]);
    let st = esp.backend.status().unwrap();
    assert!(st.slot(A).is_good() && st.slot(B).is_good());
    esp.backend.prefer(A).unwrap();
    assert_eq!(esp.power_ons(2), [A, A]);
    esp.backend.mark_good(A).unwrap();
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b.conf"]);
}

#[test]
fn the_armed_slot_boots_first_even_for_an_older_release() {
    let esp = esp();
    esp.backend.arm(B, 2, "1.0.0").unwrap();
    assert_eq!(esp.power_on(), B);
    esp.backend.mark_good(B).unwrap();
    // The following update goes to A, which now sorts above B again.
    esp.backend.disarm(A).unwrap();
    assert_eq!(esp.names(), ["nusa-b.conf"]);
    esp.backend.arm(A, 1, "0.9.0").unwrap();
    assert_eq!(esp.power_ons(3), [A, B, B]);
}

#[test]
fn nothing_is_touched_while_the_booted_slot_is_on_trial() {
    let esp = esp();
    esp.backend.arm(B, 3, "1.5.0").unwrap();
    esp.power_on();
    let before = esp.names();
    for r in [
        esp.backend.disarm(A),
        esp.backend.arm(A, 3, "1.6.0"),
        esp.backend.mark_good(A),
    ] {
        assert!(matches!(r, Err(SlotError::Refused { .. })), "{r:?}");
    }
    assert_eq!(esp.names(), before);
}

#[test]
fn counters_written_by_others_are_understood() {
    let esp = esp();
    let text = fs::read_to_string(esp.entries.join("nusa-a.conf"))
        .unwrap()
        .replace("slot a", "slot b");
    let text = text
        .replace("/a/", "/b/")
        .replace("-a ", "-b ")
        .replace("=a ", "=b ")
        .replace("version 1-", "version 2-");
    // `+3-0` is a valid way to write three tries left, none done.
    fs::write(esp.entries.join("nusa-b+3-0.conf"), text).unwrap();
    assert_eq!(esp.power_on(), B);
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b+2-1.conf"]);
    esp.backend.mark_good(B).unwrap();
    assert_eq!(esp.names(), ["nusa-a.conf", "nusa-b.conf"]);
}

#[test]
fn leftovers_and_foreign_entries_do_not_count() {
    let esp = esp();
    fs::write(esp.entries.join(".nusa-b+3.conf.tmp"), "torn").unwrap();
    fs::write(
        esp.entries.join("debian-6.1.conf"),
        "title Debian\nversion 99\noptions root=/dev/sda2\n",
    )
    .unwrap();
    let st = esp.backend.status().unwrap();
    assert_eq!((st.next, st.slot(B).bootable), (A, false));
    // systemd-boot agrees: the foreign entry has no sort-key, ours go first.
    assert_eq!(esp.power_on(), A);
}

#[test]
fn a_single_try_is_spent_by_a_quick_power_cycle() {
    let esp = esp();
    esp.backend.arm(B, 1, "1.5.0").unwrap();
    assert_eq!(esp.power_ons(2), [B, A]);
}

#[test]
fn mark_good_without_an_entry_for_the_booted_slot_fails() {
    let esp = esp();
    esp.backend.arm(B, 3, "1.5.0").unwrap();
    esp.power_on();
    fs::remove_file(esp.entries.join("nusa-b+2-1.conf")).unwrap();
    let err = esp.backend.mark_good(B).unwrap_err();
    assert!(matches!(err, SlotError::NotApplied { .. }), "{err}");
}

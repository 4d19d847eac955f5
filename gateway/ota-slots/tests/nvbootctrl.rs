//! The nvbootctrl backend against a fake `nvbootctrl` (a shell script
//! backed by a state file, as RAUC's tests fake their bootloader tools),
//! with the UEFI retry counting emulated here. This exercises argument
//! building and output parsing; it says nothing about real Jetson firmware.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nusa_ota_slots::{NvBootCtrlBackend, NvBootCtrlConfig, Slot, SlotBackend, SlotError};

const A: Slot = Slot::A;
const B: Slot = Slot::B;

/// Output shaped like `nvbootctrl -t rootfs dump-slots-info` on Jetson
/// Linux 35/36. `mode` injects faults.
const FAKE: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
. "$dir/state"
if [ "$1" != "-t" ] || [ "$2" != "rootfs" ]; then echo "fake: expected -t rootfs" >&2; exit 2; fi
cmd=$3
arg=$4
save() {
  printf 'current=%s\nactive=%s\nretry0=%s\nstatus0=%s\nok0=%s\nretry1=%s\nstatus1=%s\nok1=%s\nmode=%s\n' \
    "$current" "$active" "$retry0" "$status0" "$ok0" "$retry1" "$status1" "$ok1" "$mode" > "$dir/state.new"
  mv "$dir/state.new" "$dir/state"
}
letter() { if [ "$1" = 0 ]; then echo A; else echo B; fi; }
slotarg() { case "$arg" in 0|1) ;; *) echo "invalid slot: $arg" >&2; exit 1 ;; esac; }
case "$cmd" in
get-current-slot) echo "$current" ;;
dump-slots-info)
  if [ "$mode" = spew ]; then i=0; while [ $i -lt 3000 ]; do echo "padding padding padding padding padding"; i=$((i+1)); done; fi
  if [ "$mode" = garbled ]; then echo "Capsule update status: 0"; exit 0; fi
  echo "Current rootfs slot: $(letter "$current")"
  echo "Active rootfs slot: $(letter "$active")"
  echo "num_slots: 2"
  echo "slot: 0,             retry_count: $retry0,             status: $status0"
  echo "slot: 1,             retry_count: $retry1,             status: $status1" ;;
is-slot-marked-successful) slotarg; eval "o=\$ok$arg"; [ "$o" = 1 ] ;;
set-active-boot-slot)
  slotarg
  if [ "$mode" = fail-set ]; then echo "Failed to write efivar RootfsStatusSlot" >&2; exit 1; fi
  active=$arg
  if [ "$mode" != stuck-unbootable ]; then eval "status$arg=normal"; fi
  eval "retry$arg=3; ok$arg=0"
  save ;;
mark-boot-successful)
  if [ "$mode" = drop-mark ]; then exit 0; fi
  eval "ok$current=1; retry$current=3"
  save ;;
*) echo "Unknown command: $cmd" >&2; exit 1 ;;
esac
"#;

/// The script is written once per process, before any test runs it, and
/// each test calls it through a symlink: a script freshly written by one
/// thread can fail to exec with ETXTBSY while another thread forks.
fn fake_script() -> &'static Path {
    static SCRIPT: OnceLock<PathBuf> = OnceLock::new();
    SCRIPT.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // One fixed name, replaced by rename: a run still executing the old
        // file keeps its inode, and runs do not pile up files.
        let path = dir.join("fake-nvbootctrl.sh");
        let tmp = dir.join(format!("fake-nvbootctrl.{}.tmp", std::process::id()));
        fs::write(&tmp, FAKE).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, &path).unwrap();
        path
    })
}

struct Jetson {
    dir: tempfile::TempDir,
    backend: NvBootCtrlBackend,
}

/// A Jetson booted from A, both slots normal, A marked successful.
fn jetson() -> Jetson {
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("nvbootctrl");
    std::os::unix::fs::symlink(fake_script(), &tool).unwrap();
    let j = Jetson {
        backend: NvBootCtrlBackend::new(NvBootCtrlConfig {
            tool,
            retry_max: 3,
            versions_file: Some(dir.path().join("slot-versions.json")),
        }),
        dir,
    };
    j.write_state(&[
        ("current", "0"),
        ("active", "0"),
        ("retry0", "3"),
        ("status0", "normal"),
        ("ok0", "1"),
        ("retry1", "3"),
        ("status1", "normal"),
        ("ok1", "0"),
        ("mode", ""),
    ]);
    j
}

impl Jetson {
    fn state(&self) -> BTreeMap<String, String> {
        let text = fs::read_to_string(self.dir.path().join("state")).unwrap();
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn write_state(&self, kv: &[(&str, &str)]) {
        let mut st = if self.dir.path().join("state").exists() {
            self.state()
        } else {
            BTreeMap::new()
        };
        for (k, v) in kv {
            st.insert((*k).to_owned(), (*v).to_owned());
        }
        let text: String = st.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(self.dir.path().join("state"), text).unwrap();
    }

    /// Every command line the backend ran, oldest first; clears the log.
    fn calls(&self) -> Vec<String> {
        let path = self.dir.path().join("calls");
        let text = fs::read_to_string(&path).unwrap_or_default();
        fs::remove_file(&path).ok();
        text.lines().map(str::to_owned).collect()
    }

    /// UEFI at power-on, as the Developer Guide describes the fail-over:
    /// an unbootable active slot or one with no retries left is given up
    /// for the other; the booted slot's retry count drops by one.
    fn power_cycle(&self) -> Slot {
        let st = self.state();
        let mut active: usize = st["active"].parse().unwrap();
        let mut set = Vec::new();
        if st[&format!("status{active}")] != "normal" || st[&format!("retry{active}")] == "0" {
            set.push((format!("status{active}"), "unbootable".to_owned()));
            active = 1 - active;
        }
        let retry: u32 = st[&format!("retry{active}")].parse().unwrap();
        set.push((
            format!("retry{active}"),
            retry.saturating_sub(1).to_string(),
        ));
        set.push(("active".into(), active.to_string()));
        set.push(("current".into(), active.to_string()));
        let kv: Vec<(&str, &str)> = set.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.write_state(&kv);
        if active == 0 {
            A
        } else {
            B
        }
    }
}

#[test]
fn status_is_read_from_the_tool() {
    let j = jetson();
    let st = j.backend.status().unwrap();
    assert_eq!((st.booted, st.next), (A, A));
    assert!(st.slot(A).is_good());
    assert_eq!(
        (
            st.slot(B).bootable,
            st.slot(B).successful,
            st.slot(B).tries_left
        ),
        (true, false, Some(3))
    );
    assert_eq!(
        j.calls(),
        [
            "-t rootfs get-current-slot",
            "-t rootfs dump-slots-info",
            "-t rootfs is-slot-marked-successful 0",
            "-t rootfs is-slot-marked-successful 1",
        ]
    );
}

#[test]
fn an_armed_slot_that_never_comes_up_falls_back() {
    let j = jetson();
    j.backend.disarm(B).unwrap();
    assert!(
        !j.calls().iter().any(|c| c.contains("set-active")),
        "B was not active: nothing to change"
    );
    j.backend.arm(B, 3, "1.5.0").unwrap();
    assert!(j
        .calls()
        .contains(&"-t rootfs set-active-boot-slot 1".to_owned()));
    let st = j.backend.status().unwrap();
    assert_eq!((st.next, st.slot(B).version.as_deref()), (B, Some("1.5.0")));
    let boots: Vec<Slot> = (0..5).map(|_| j.power_cycle()).collect();
    assert_eq!(boots, [B, B, B, A, A]);
    let st = j.backend.status().unwrap();
    assert_eq!((st.booted, st.next, st.slot(B).bootable), (A, A, false));
    assert!(matches!(
        j.backend.prefer(B),
        Err(SlotError::Refused { .. })
    ));
}

#[test]
fn a_slot_that_passes_its_health_gate_is_marked_and_verified() {
    let j = jetson();
    j.backend.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(j.power_cycle(), B);
    j.calls();
    j.backend.mark_good(B).unwrap();
    let calls = j.calls();
    let marked = calls
        .iter()
        .position(|c| c == "-t rootfs mark-boot-successful")
        .unwrap();
    assert!(
        calls[marked..].contains(&"-t rootfs is-slot-marked-successful 1".to_owned()),
        "{calls:?}"
    );
    assert!(j.backend.status().unwrap().slot(B).is_good());
    assert_eq!(j.state()["retry1"], "3");
}

#[test]
fn accepted_boots_are_confirmed_so_a_working_slot_keeps_its_retries() {
    let j = jetson();
    // Booting A again and again: UEFI takes a retry each time; the
    // confirmation gives it back, and writes only when something is owed.
    for _ in 0..5 {
        assert_eq!(j.power_cycle(), A);
        assert_eq!(j.state()["retry0"], "2");
        j.calls();
        assert!(j.backend.confirm_boot(A).unwrap());
        assert!(j
            .calls()
            .contains(&"-t rootfs mark-boot-successful".to_owned()));
        assert_eq!(j.state()["retry0"], "3");
        assert!(!j.backend.confirm_boot(A).unwrap());
        assert!(!j.calls().iter().any(|c| c.contains("mark-boot")));
    }
    // Back on A after a rollback: set-active-boot-slot put A on trial.
    j.backend.arm(B, 3, "1.5.0").unwrap();
    assert_eq!(j.power_cycle(), B);
    j.backend.prefer(A).unwrap();
    assert_eq!(j.power_cycle(), A);
    assert!(!j.backend.status().unwrap().slot(A).successful);
    assert!(j.backend.confirm_boot(A).unwrap());
    assert!(j.backend.status().unwrap().slot(A).is_good());
    // Only the booted slot.
    assert!(matches!(
        j.backend.confirm_boot(B),
        Err(SlotError::NotApplied {
            op: "confirm boot",
            ..
        })
    ));
}

#[test]
fn a_mark_that_does_not_stick_is_an_error() {
    let j = jetson();
    j.backend.arm(B, 3, "1.5.0").unwrap();
    j.power_cycle();
    j.write_state(&[("mode", "drop-mark")]);
    let err = j.backend.mark_good(B).unwrap_err();
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
}

#[test]
fn disarming_a_pending_slot_reactivates_the_booted_one_and_keeps_it_good() {
    let j = jetson();
    j.backend.arm(B, 3, "1.5.0").unwrap();
    j.calls();
    j.backend.disarm(B).unwrap();
    let calls = j.calls();
    assert!(
        calls.contains(&"-t rootfs set-active-boot-slot 0".to_owned()),
        "{calls:?}"
    );
    let st = j.backend.status().unwrap();
    assert_eq!((st.next, st.slot(B).version.as_deref()), (A, None));
    assert!(
        st.slot(A).is_good(),
        "set-active-boot-slot put A on trial; it must be re-marked"
    );
    assert_eq!(j.power_cycle(), A);
}

#[test]
fn nothing_is_armed_without_a_good_slot_to_fall_back_to() {
    let j = jetson();
    j.write_state(&[("ok0", "0")]);
    assert!(matches!(
        j.backend.arm(B, 3, "1.5.0"),
        Err(SlotError::Refused { .. })
    ));
    assert!(!j.calls().iter().any(|c| c.contains("set-active")));
}

#[test]
fn an_unbootable_slot_that_stays_unbootable_is_reported() {
    // The 0xFF trap: set-active-boot-slot does not revive the slot.
    let j = jetson();
    j.write_state(&[
        ("status1", "unbootable"),
        ("retry1", "0"),
        ("mode", "stuck-unbootable"),
    ]);
    let err = j.backend.arm(B, 3, "1.5.0").unwrap_err();
    assert!(
        matches!(err, SlotError::NotApplied { op: "arm", .. }),
        "{err}"
    );
}

#[test]
fn tool_failures_name_the_command() {
    let j = jetson();
    j.write_state(&[("mode", "fail-set")]);
    let err = j.backend.arm(B, 3, "1.5.0").unwrap_err().to_string();
    assert!(
        err.contains("nvbootctrl -t rootfs set-active-boot-slot 1"),
        "{err}"
    );
    assert!(
        err.contains("exit status 1: Failed to write efivar"),
        "{err}"
    );
    j.write_state(&[("mode", "spew")]);
    let err = j.backend.status().unwrap_err().to_string();
    assert!(
        err.contains("dump-slots-info") && err.contains("more than 65536 bytes"),
        "{err}"
    );
    j.write_state(&[("mode", "garbled")]);
    let err = j.backend.status().unwrap_err().to_string();
    assert!(err.contains("unexpected output"), "{err}");
}

#[test]
fn a_missing_tool_is_a_clear_error() {
    let backend = NvBootCtrlBackend::new(NvBootCtrlConfig {
        tool: "/nonexistent/nvbootctrl".into(),
        ..NvBootCtrlConfig::default()
    });
    let err = backend.status().unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/nvbootctrl -t rootfs get-current-slot")
            && err.contains("cannot start"),
        "{err}"
    );
}

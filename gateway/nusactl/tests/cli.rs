//! `nusactl` as an operator and a release engineer use it: publishing with
//! `release`, then `update check | download | apply | status | history`
//! on an appliance made of files (slot images, the file-backed bootloader),
//! including a `kill -9` of the updater in the middle of writing the slot.
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

const IMAGE: usize = 48 << 20;
const SLOT: usize = 64 << 20;

fn nusactl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nusactl"))
        .args(args)
        .output()
        .unwrap();
    out
}

fn ok(args: &[&str]) -> String {
    let out = nusactl(args);
    assert!(
        out.status.success(),
        "nusactl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(version: &str) -> Vec<u8> {
    let mut img: Vec<u8> = (0..IMAGE)
        .map(|i| ((i as u64 * 2654435761) >> 11) as u8)
        .collect();
    let h = format!("NUSAIMG {version}\n");
    img[..h.len()].copy_from_slice(h.as_bytes());
    // A 1 MiB region that differs between versions.
    let salt = version.len() as u8 + version.as_bytes()[2];
    for b in &mut img[(8 << 20)..(9 << 20)] {
        *b ^= salt;
    }
    img
}

struct Box_ {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Box_ {
    fn new() -> Box_ {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(&["release", "keygen", "--keys", s(&d.join("keys"))]);
        ok(&[
            "release",
            "init",
            "--repo",
            s(&d.join("repo")),
            "--keys",
            s(&d.join("keys")),
        ]);
        let mut a = image("1.0.0");
        a.resize(SLOT, 0);
        std::fs::write(d.join("slot-a"), &a).unwrap();
        std::fs::write(d.join("slot-b"), vec![0u8; SLOT]).unwrap();
        std::fs::write(d.join("version"), "1.0.0\n").unwrap();
        std::fs::write(d.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::create_dir_all(d.join("boot")).unwrap();
        let config = d.join("update.toml");
        std::fs::write(
            &config,
            format!(
                r#"variant = "x86_64-rtx"
repository = "{repo}"
version_file = "{d}/version"
trusted_root = "{repo}/metadata/1.root.json"
state_dir = "{d}/state"
machine_id = "{d}/machine-id"
slots = ["{d}/slot-a", "{d}/slot-b"]
retry_backoff_s = 0
health_timeout_s = 3
reboot_command = []
metrics_file = "{d}/metrics.prom"

[bootloader]
kind = "file"
dir = "{d}/boot"
"#,
                repo = d.join("repo").display(),
                d = d.display()
            ),
        )
        .unwrap();
        Box_ { dir, config }
    }

    fn publish(&self, version: &str) {
        let img = self.dir.path().join(format!("{version}.img"));
        std::fs::write(&img, image(version)).unwrap();
        let out = ok(&[
            "release",
            "add",
            "--repo",
            s(&self.dir.path().join("repo")),
            "--keys",
            s(&self.dir.path().join("keys")),
            "--variant",
            "x86_64-rtx",
            "--version",
            version,
            "--image",
            s(&img),
        ]);
        assert!(
            out.contains(&format!("published x86_64-rtx {version}")),
            "{out}"
        );
    }

    fn update(&self, args: &[&str]) -> Output {
        let mut all = vec!["update", "--config", s(&self.config)];
        all.extend_from_slice(args);
        nusactl(&all)
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/state.json")).unwrap_or_default()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_download_apply_status_and_history() {
    let b = Box_::new();
    let o = b.update(&["check"]);
    assert!(
        o.status.success() && text(&o).contains("no release"),
        "{}",
        text(&o)
    );
    b.publish("1.1.0");
    let o = b.update(&["check"]);
    assert!(
        text(&o).contains("newest release 1.1.0") && text(&o).contains("would install now"),
        "{}",
        text(&o)
    );

    let o = b.update(&["download"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("downloaded"), "{}", text(&o));
    let o = b.update(&["status"]);
    assert!(text(&o).contains("writing 1.1.0"), "{}", text(&o));

    let o = b.update(&["apply", "--no-reboot"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("reboot to continue"), "{}", text(&o));
    let slot_b = std::fs::read(b.dir.path().join("slot-b")).unwrap();
    assert!(slot_b[..IMAGE] == image("1.1.0")[..], "slot B holds 1.1.0");

    let o = b.update(&["--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["running"]["slot"], "A", "{v}");
    assert_eq!(v["next_boot"], "B", "{v}");
    assert_eq!(v["state"]["state"], "Rebooting", "{v}");
    let o = b.update(&["status"]);
    let t = text(&o);
    assert!(
        t.contains("running   1.0.0 on slot A (good)") && t.contains("next boot slot B"),
        "{t}"
    );
    assert!(t.contains("on trial, 3 boot tries left"), "{t}");
    // As the systemd units write it: options after the subcommand.
    let o = nusactl(&["update", "status", "--config", s(&b.config), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"]["state"], "Rebooting", "{v}");
    let o = b.update(&["history"]);
    assert!(text(&o).contains("1.1.0 started"), "{}", text(&o));
}

#[test]
fn a_second_updater_is_refused_while_one_runs() {
    let b = Box_::new();
    b.publish("1.1.0");
    let mut first = Command::new(env!("CARGO_BIN_EXE_nusactl"))
        .args(["update", "--config", s(&b.config), "apply", "--no-reboot"])
        .spawn()
        .unwrap();
    // Wait until the first holds the lock (its state moves).
    let t0 = Instant::now();
    while !b.state().contains("Downloading")
        && !b.state().contains("Writing")
        && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = b.update(&["apply", "--no-reboot"]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("another updater is running"),
        "{t}"
    );
    assert!(first.wait().unwrap().success());
}

/// The updater's stderr, line by line as it comes. Not a terminal, so it
/// prints a progress line when a step starts, crosses a tenth (at most every
/// 250 ms) and ends: `write: 40% (20971520 of 50331648 bytes, 48.0 MiB/s)`.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The percentage of a progress line of the slot write.
fn write_percent(line: &str) -> Option<u32> {
    line.strip_prefix("write: ")?
        .split('%')
        .next()?
        .parse()
        .ok()
}

#[test]
fn kill_9_while_writing_then_apply_again_completes() {
    // Each round kills at the first progress line of the write at or past
    // its point (a line short of 100%: bytes are still to be written).
    let mut landed = 0;
    for (round, kill_from) in [0u32, 30, 60].into_iter().enumerate() {
        let b = Box_::new();
        b.publish("1.1.0");
        let mut child = Command::new(env!("CARGO_BIN_EXE_nusactl"))
            .args(["update", "--config", s(&b.config), "apply", "--no-reboot"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stderr_lines(&mut child);
        let mut seen = Vec::new();
        let t0 = Instant::now();
        let kill_at = loop {
            let left = Duration::from_secs(120).saturating_sub(t0.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let percent = write_percent(&line);
                    seen.push(line);
                    match percent {
                        Some(p) if (kill_from..100).contains(&p) => break Some(p),
                        // The write ended before this round's point.
                        Some(100) => break None,
                        _ => {}
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("round {round}: the updater ended before writing: {seen:#?}")
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("round {round}: no write progress within 120 s: {seen:#?}")
                }
            }
        };
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let state = b.state();
        // Mid-write: our SIGKILL ended it (not a finished run), what it
        // persisted last is the Writing state, and slot B does not hold the
        // whole image yet.
        let written =
            std::fs::read(b.dir.path().join("slot-b")).unwrap()[..IMAGE] == image("1.1.0")[..];
        let mid_write = status.signal() == Some(9) && state.contains("\"Writing\"") && !written;
        println!(
            "round {round}: killed at write {kill_at:?}% ({status}), slot B written: {written}, \
             mid-write: {mid_write}, in {}",
            &state[..state.len().min(60)]
        );
        // The bootloader still boots A (B was disarmed before the write).
        let boot = std::fs::read_to_string(b.dir.path().join("boot/slots.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&boot).unwrap();
        if mid_write {
            landed += 1;
            assert_eq!(v["slots"][1]["bootable"], false, "{boot}");
            // The next boot's health gate leaves the interrupted write to
            // the timer's run and passes.
            let o = b.update(&["boot"]);
            let t = text(&o);
            assert!(
                o.status.success() && t.contains("left to nusa-update.service"),
                "{t}"
            );
            assert!(b.state().contains("\"Writing\""), "{}", b.state());
        }
        let o = b.update(&["apply", "--no-reboot"]);
        assert!(o.status.success(), "{}", text(&o));
        let slot_b = std::fs::read(b.dir.path().join("slot-b")).unwrap();
        assert!(
            slot_b[..IMAGE] == image("1.1.0")[..],
            "round {round}: slot B holds 1.1.0"
        );
        assert!(b.state().contains("\"Rebooting\""), "{}", b.state());
    }
    assert!(
        landed >= 1,
        "no round's kill landed while the slot was being written"
    );
}

/// Power-on of the appliance made of files: the file bootloader picks a
/// slot, and the version file follows the booted slot's image.
fn power_on(b: &Box_) -> nusa_ota_slots::Slot {
    use nusa_ota_slots::SlotBackend;
    let backend = nusa_ota_slots::FileBackend::new(&b.dir.path().join("boot")).unwrap();
    let slot = backend.simulate_boot().unwrap();
    let file = if slot == nusa_ota_slots::Slot::A {
        "slot-a"
    } else {
        "slot-b"
    };
    let head = std::fs::read(b.dir.path().join(file)).unwrap();
    let version = String::from_utf8_lossy(&head[8..13]).to_string();
    std::fs::write(b.dir.path().join("version"), format!("{version}\n")).unwrap();
    let _ = backend.status().unwrap();
    slot
}

#[test]
fn mark_good_accepts_the_new_slot_and_a_failing_gate_rolls_back_for_good() {
    use nusa_ota_slots::Slot;
    let b = Box_::new();
    b.publish("1.1.0");
    assert!(b.update(&["apply", "--no-reboot"]).status.success());
    assert_eq!(power_on(&b), Slot::B);
    // No gateway runs here: the operator accepts the slot by hand.
    let o = b.update(&["mark-good"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&b.update(&["status"]));
    assert!(t.contains("running   1.1.0 on slot B (good)"), "{t}");
    assert!(t.contains("1.1.0 good in slot B"), "{t}");

    // 1.2.0: the health gate finds no gateway within its 3 s.
    b.publish("1.2.0");
    assert!(b.update(&["apply", "--no-reboot"]).status.success());
    assert_eq!(power_on(&b), Slot::A);
    let o = b.update(&["boot"]);
    let t = text(&o);
    assert!(
        t.contains("rolling back") && t.contains("reboot to continue"),
        "{t}"
    );
    assert_eq!(
        power_on(&b),
        Slot::B,
        "the rollback boots the previous good slot"
    );
    // The gate on the slot that came back passes (boot-complete.target is
    // reached; the good slot is not punished), and says what failed.
    let o = b.update(&["boot"]);
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("1.2.0 failed at Health")
            && t.contains("this boot is good"),
        "{t}"
    );
    let t = text(&b.update(&["status"]));
    assert!(t.contains("running   1.1.0 on slot B (good)"), "{t}");
    assert!(t.contains("bad       1.2.0"), "{t}");
    // Not retried.
    let o = b.update(&["apply", "--no-reboot"]);
    let t = text(&o);
    assert!(
        o.status.success() && !t.contains("reboot to continue"),
        "{t}"
    );
    let t = text(&b.update(&["check"]));
    assert!(t.contains("recorded bad"), "{t}");
    let metrics = std::fs::read_to_string(b.dir.path().join("metrics.prom")).unwrap();
    assert!(metrics.contains("nusa_update_state"), "{metrics}");
}

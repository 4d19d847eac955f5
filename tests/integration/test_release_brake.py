"""The fleet brake with the real `nusactl`: `release pause|resume|yank`
sign the brake into a TUF repository on disk, and `nusactl update` on an
appliance made of files (slot files, the file bootloader, a folder
repository) refuses a paused release at check time, takes it once resumed,
and does not apply a release paused after it was downloaded.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nusatest as nt

VARIANT = "x86_64-rtx"


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(nt.nusactl_binary()), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=nt.REPO_ROOT)


def ok(args: list[str]) -> str:
    r = run(args)
    assert r.returncode == 0, f"nusactl {' '.join(args)} ({r.returncode}):\n{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


class Fleet:
    """A release repository with its keys, and release 1.1.0 in it."""

    def __init__(self, root: Path):
        self.root = root
        self.keys = root / "keys"
        self.repo = root / "repo"
        ok(["release", "keygen", "--keys", str(self.keys)])
        ok(["release", "init", "--repo", str(self.repo), "--keys", str(self.keys)])
        image = root / "1.1.0.img"
        image.write_bytes(b"NUSAIMG 1.1.0\n" + os.urandom(256 << 10))
        ok(["release", "add", "--repo", str(self.repo), "--keys", str(self.keys),
            "--variant", VARIANT, "--version", "1.1.0", "--image", str(image)])

    def brake(self, action: str, *extra: str) -> subprocess.CompletedProcess:
        return run(["release", action, "--repo", str(self.repo), "--keys", str(self.keys),
                    "--version", "1.1.0", "--by", "alice", *extra])


class Box:
    """An appliance made of files running 1.0.0 on slot A."""

    def __init__(self, root: Path, fleet: Fleet):
        root.mkdir(parents=True)
        self.root = root
        for slot in ("slot-a", "slot-b"):
            with open(root / slot, "wb") as f:
                f.truncate(1 << 20)
        (root / "version").write_text("1.0.0\n")
        (root / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
        (root / "boot").mkdir()
        self.config = root / "update.toml"
        self.config.write_text(nt.toml_dumps({
            "variant": VARIANT,
            "repository": str(fleet.repo),
            "version_file": str(root / "version"),
            "trusted_root": str(fleet.repo / "metadata" / "1.root.json"),
            "state_dir": str(root / "state"),
            "machine_id": str(root / "machine-id"),
            "slots": [str(root / "slot-a"), str(root / "slot-b")],
            "reboot_command": [],
            "metrics_file": str(root / "metrics.prom"),
            "bootloader": {"kind": "file", "dir": str(root / "boot")},
        }))

    def update(self, *args: str) -> subprocess.CompletedProcess:
        return run(["update", "--config", str(self.config), *args])

    def status(self) -> dict:
        r = self.update("--json", "status")
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)


def test_a_paused_release_is_refused_then_taken_once_resumed(tmp_path: Path):
    fleet = Fleet(tmp_path / "fleet")
    box = Box(tmp_path / "box", fleet)
    out = fleet.brake("pause", "--reason", "GPU driver hangs on A2")
    assert out.returncode == 0 and "paused 1.1.0" in out.stdout, out.stdout + out.stderr
    shown = ok(["release", "brake", "--repo", str(fleet.repo)])
    assert "paused 1.1.0: GPU driver hangs on A2 (by alice" in shown, shown

    r = box.update("check")
    assert r.returncode == 0 and "1.1.0 is paused by the fleet brake: GPU driver hangs on A2" in r.stdout, \
        r.stdout + r.stderr
    r = box.update("apply", "--no-reboot")
    assert r.returncode == 0 and r.stdout.startswith("idle"), r.stdout + r.stderr
    status = box.status()
    assert "is paused by the fleet brake: GPU driver hangs on A2 (by alice" in status["last_refusal"], status
    assert status["next_boot"] == "A" and status["last_attempt"] is None, status
    text = box.update("status").stdout
    assert "refused   release 1.1.0 is paused" in text, text

    r = fleet.brake("resume")
    assert r.returncode == 0 and "resumed 1.1.0" in r.stdout, r.stdout + r.stderr
    r = box.update("apply", "--no-reboot")
    assert r.returncode == 0 and "the boot target is set" in r.stdout, r.stdout + r.stderr
    assert box.status()["next_boot"] == "B"


def test_a_release_paused_after_its_download_is_not_applied(tmp_path: Path):
    fleet = Fleet(tmp_path / "fleet")
    box = Box(tmp_path / "box", fleet)
    r = box.update("download")
    assert r.returncode == 0 and "downloaded" in r.stdout, r.stdout + r.stderr

    assert fleet.brake("pause", "--reason", "boot loop on Orin").returncode == 0
    r = box.update("apply", "--no-reboot")
    assert r.returncode == 0 and r.stdout.startswith("idle"), r.stdout + r.stderr
    status = box.status()
    assert status["next_boot"] == "A", status
    assert status["last_attempt"]["outcome"] == "Braked", status
    assert "boot loop on Orin" in status["last_attempt"]["reason"], status
    assert "paused" in status["last_refusal"], status
    slot_b = next(s for s in status["slots"] if s["slot"] in ("b", "B"))
    assert not slot_b["bootable"], status
    text = box.update("status").stdout
    assert "last      1.1.0 Braked: release 1.1.0 is paused" in text, text


def test_a_yank_is_permanent(tmp_path: Path):
    fleet = Fleet(tmp_path / "fleet")
    box = Box(tmp_path / "box", fleet)
    r = fleet.brake("yank", "--reason", "corrupts the model cache")
    assert r.returncode == 0 and "yanked 1.1.0" in r.stdout, r.stdout + r.stderr
    for action in ("resume", "pause"):
        r = fleet.brake(action)
        assert r.returncode != 0 and "permanent" in r.stderr, (action, r.stdout + r.stderr)
    r = box.update("check")
    assert "1.1.0 is yanked by the fleet brake: corrupts the model cache" in r.stdout, r.stdout + r.stderr
    r = box.update("apply", "--no-reboot")
    assert r.returncode == 0 and box.status()["next_boot"] == "A", r.stdout + r.stderr
    # A version that is not published is refused (a typo must not brake nothing).
    r = run(["release", "pause", "--repo", str(fleet.repo), "--keys", str(fleet.keys),
             "--version", "1.9.9"])
    assert r.returncode != 0 and "no release 1.9.9" in r.stderr, r.stdout + r.stderr

"""The Jetson variant (aarch64) booted in QEMU: image/jetson/build lays
the appliance onto an L4T-shaped root file system, the result boots on an
emulated aarch64 machine, serves tiny-cnn with the golden outputs, updates
itself into the other rootfs slot through nvbootctrl, and rolls back from a
broken release.

    sudo .venv/bin/python -m pytest -q tests/image/test_jetson.py

What is real: our aarch64 binaries (scripts/build-aarch64) and ONNX
Runtime's aarch64 library, our units, image/jetson/build itself, the
updater's nvbootctrl backend, systemd, an aarch64 Linux kernel, ext4 slots
and a GPT with L4T's partition names (APP, APP_b, UDA).

TEST DOUBLES, standing where NVIDIA's parts cannot be had (the BSP and its
sample root file system come from developer.nvidia.com, which these machines
cannot reach) or cannot run (a Jetson module):
- jetson/standin-l4t: Linux_for_Tegra/rootfs is Debian 12 arm64 with
  Debian's kernel, not Ubuntu 22.04 with L4T's;
- jetson/nvbootctrl-double: nvbootctrl, keeping its state on a small disk
  of its own that stands in for UEFI's variables;
- Uefi below: the firmware's rootfs A/B choice at power-on (a retry taken
  per boot, fail-over when the active slot has none left, as NVIDIA's
  L4TRootfsValidation describes it) and L4TLauncher (the kernel, initrd and
  command line from the slot's /boot/extlinux/extlinux.conf);
- flashing: the test writes the release's root.img into APP and APP_b of a
  GPT disk (NVIDIA's l4t_initrd_flash.sh with ROOTFS_AB=1 writes both
  slots and leaves UDA empty).

Every release carries overlays/test/ (the update timer every 10 s) and
jetson/overlay/ (the journal on the serial console, which L4T does not
forward), and health_timeout_s = 60.

QEMU's aarch64 "virt" machine runs under TCG (emulated on x86): boots take
minutes. Environment: NUSA_JETSON_BIN_DIR takes prebuilt aarch64 binaries
(default: scripts/build-aarch64 builds them), NUSA_IMAGE_BIN_DIR host
binaries (nusactl for the repository; default: cargo build --release),
NUSA_JETSON_L4T an existing (stand-in) Linux_for_Tegra instead of a fresh
jetson/standin-l4t (image/jetson/build changes it in place; a second run
replaces what the first laid down).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import qemu
from qemu import nt
from repo_server import RepoServer
from test_appliance import Fleet, _bin_dir

VARIANT = "aarch64-jetson"
BASE, GOOD, BROKEN = "1.0.0", "1.1.0", "1.2.0"
HEALTH_TIMEOUT_S = 60
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts" / "jetson"
OVERLAY_BROKEN = HERE / "overlays" / "broken"
OVERLAY_JETSON = HERE / "jetson" / "overlay"
SLOT_LABELS = ("APP", "APP_b")
NVRAM_BYTES = 64 << 10

pytestmark = pytest.mark.timeout(3600)


def slow(seconds: float) -> float:
    """Emulated aarch64 on x86: several times slower than KVM."""
    return seconds * 6


class JetsonFleet(Fleet):
    def publish(self, version: str) -> str:
        return self.run("release", "add", "--repo", str(self.repo), "--keys", str(self.keys),
                        "--variant", VARIANT, "--version", version,
                        "--image", str(self.releases[version] / "root.img"))


def _aarch64_bins() -> Path:
    if os.environ.get("NUSA_JETSON_BIN_DIR"):
        return Path(os.environ["NUSA_JETSON_BIN_DIR"]).resolve()
    out = subprocess.run([str(qemu.REPO_ROOT / "scripts" / "build-aarch64")], check=True,
                         capture_output=True, text=True, timeout=3000).stdout
    return Path(out.strip().splitlines()[-1])


def _build(fleet: Fleet, l4t: Path, bins: Path, version: str, extra: list[str]) -> Path:
    out = fleet.work / f"jetson-{version}"
    cmd = [str(qemu.REPO_ROOT / "image" / "jetson" / "build"), "--version", version,
           "--l4t", str(l4t), "--bin-dir", str(bins), "--out", str(out),
           "--trusted-root", str(fleet.trusted_root),
           "--update-repository", f"http://10.0.2.2:{fleet.server.port}",
           "--update-setting", f"health_timeout_s = {HEALTH_TIMEOUT_S}",
           # The repository is the host, 10.0.2.2 to QEMU, over plain HTTP: an
           # explicit choice the updater logs (it refuses http:// off loopback).
           "--update-setting", "allow_insecure_transport = true",
           "--overlay", str(HERE / "overlays" / "test"), "--overlay", str(OVERLAY_JETSON), *extra]
    log = fleet.work / f"jetson-build-{version}.log"
    t = time.monotonic()
    with log.open("w") as f:
        proc = subprocess.run([*qemu.sudo(), *cmd], stdout=f, stderr=subprocess.STDOUT, timeout=1800)
    assert proc.returncode == 0, f"image/jetson/build --version {version} failed: {log.read_text()[-3000:]}"
    print(f"\nimage/jetson/build --version {version}: {time.monotonic() - t:.0f} s")
    print(log.read_text())
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    missing = [t for t in ("qemu-system-aarch64", "mmdebstrap", "sfdisk", "debugfs")
               if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run image/deps")
    work = Path(os.environ["NUSA_IMAGE_WORK"]) / "jetson" if os.environ.get("NUSA_IMAGE_WORK") \
        else tmp_path_factory.mktemp("jetson-fleet")
    work.mkdir(parents=True, exist_ok=True)
    host_bins = _bin_dir()
    bins = _aarch64_bins()
    f = JetsonFleet(work, host_bins / "nusactl")
    f.init_repository()
    (f.repo / "targets").mkdir(parents=True, exist_ok=True)
    f.server = RepoServer(f.repo)
    with f.server:
        if os.environ.get("NUSA_JETSON_L4T"):
            l4t = Path(os.environ["NUSA_JETSON_L4T"]).resolve()
        else:
            t = time.monotonic()
            subprocess.run([*qemu.sudo(), str(HERE / "jetson" / "standin-l4t"), str(work / "standin")],
                           check=True, timeout=3000)
            print(f"\nstand-in Linux_for_Tegra: {time.monotonic() - t:.0f} s")
            l4t = work / "standin" / "Linux_for_Tegra"
        # The same tree, changed in place by each build, as on a release
        # engineer's machine; every release is kept as its root.img.
        for version, extra in ((BASE, []), (GOOD, []), (BROKEN, ["--overlay", str(OVERLAY_BROKEN)])):
            f.releases[version] = _build(f, l4t, bins, version, extra)
        yield f


# --------------------------------------------------------------------------
# The board: firmware double, flashing, the VM


@dataclass
class Boot:
    slot: int
    kernel: Path
    initrd: Path
    append: str


class Uefi:
    """TEST DOUBLE of the Jetson firmware's rootfs A/B choice and of
    L4TLauncher. The state is the nvbootctrl double's block on the NVRAM
    disk."""

    def __init__(self, nvram: Path):
        self.nvram = nvram

    def read(self) -> dict[str, str]:
        text = self.nvram.read_bytes()[:4096].rstrip(b"\0").decode()
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def write(self, st: dict[str, str]) -> None:
        text = "".join(f"{k}={v}\n" for k, v in st.items()).encode()
        with self.nvram.open("r+b") as f:
            f.write(text.ljust(4096, b"\0"))

    def flash(self) -> None:
        """What flashing leaves: A active and good, B a copy, both normal."""
        with self.nvram.open("wb") as f:
            f.truncate(NVRAM_BYTES)
        self.write({"current": "0", "active": "0", "retry0": "3", "status0": "normal", "ok0": "1",
                    "retry1": "3", "status1": "normal", "ok1": "0"})

    def power_on(self) -> int:
        """The slot this boot runs: the active one unless it is unbootable
        or out of retries (then it is marked unbootable and the other is
        tried); one retry is taken from the slot booted."""
        st = self.read()
        s = int(st["active"])
        if st[f"status{s}"] != "normal" or st[f"retry{s}"] == "0":
            st[f"status{s}"] = "unbootable"
            s = 1 - s
            if st[f"status{s}"] != "normal" or st[f"retry{s}"] == "0":
                raise AssertionError(f"UEFI: no bootable rootfs slot (would boot recovery): {st}")
        st[f"retry{s}"] = str(int(st[f"retry{s}"]) - 1)
        st["active"] = st["current"] = str(s)
        self.write(st)
        return s

    @staticmethod
    def launcher(disk: Path, part: qemu.Partition, slot: int, dest: Path) -> Boot:
        """L4TLauncher: the slot's extlinux.conf, its kernel and initrd."""
        conf = qemu.ext4_read(disk, part, "/boot/extlinux/extlinux.conf")
        assert conf, f"no /boot/extlinux/extlinux.conf in {part.name}"
        keys: dict[str, str] = {}
        for line in conf.splitlines():
            m = re.match(r"\s*(LINUX|INITRD|APPEND)\s+(.*)", line)
            if m and m.group(1) not in keys:
                keys[m.group(1)] = m.group(2).strip()
        dest.mkdir(parents=True, exist_ok=True)
        files = {}
        for key in ("LINUX", "INITRD"):
            files[key] = dest / f"slot{slot}-{Path(keys[key]).name}"
            subprocess.run(["debugfs", "-R", f"dump {keys[key]} {files[key]}",
                            f"{disk}?offset={part.start}"], check=True, capture_output=True)
            assert files[key].stat().st_size > 0, f"{keys[key]} missing in {part.name}"
        # ${cbootargs} is the firmware's (console, board); the root is the
        # slot being booted.
        append = keys["APPEND"].replace("${cbootargs}", "").strip()
        append = re.sub(r"root=\S+", f"root=PARTLABEL={SLOT_LABELS[slot]}", append)
        return Boot(slot, files["LINUX"], files["INITRD"], f"{append} panic=10")


@dataclass
class JetsonVm(qemu.Vm):
    nvram: Path | None = None
    boot_args: Boot | None = None

    def command(self) -> list[str]:
        fwd = f"tcp:127.0.0.1:{self.port}-:8443,hostfwd=udp:127.0.0.1:{self.port}-:8443"
        b = self.boot_args
        return [
            "qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a72", "-accel", "tcg,thread=multi",
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-kernel", str(b.kernel), "-initrd", str(b.initrd), "-append", b.append,
            "-drive", f"if=none,id=disk,format=raw,file={self.disk}",
            "-device", "virtio-blk-pci,drive=disk",
            "-drive", f"if=none,id=nvram,format=raw,file={self.nvram}",
            "-device", "virtio-blk-pci,drive=nvram,serial=nvram",
            "-netdev", f"user,id=n0,hostfwd={fwd}", "-device", "virtio-net-pci,netdev=n0",
            "-serial", f"file:{self.serial_log}", "-display", "none", "-monitor", "none",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            "-no-reboot",
        ]


class Board:
    """A Jetson as the test sees it: the NVMe disk, UEFI's variables, the VM."""

    def __init__(self, fleet: Fleet, workdir: Path):
        self.fleet = fleet
        self.workdir = workdir
        self.disk = workdir / "nvme.raw"
        self.uefi = Uefi(workdir / "nvram.raw")
        self.flash(fleet.releases[BASE] / "root.img")
        self.vm = JetsonVm(disk=self.disk, workdir=workdir / "vm", port=nt.free_port(),
                           memory_mib=2048, cpus=2, nvram=self.uefi.nvram)
        self.appliance: qemu.Appliance | None = None
        self.identity: str | None = None
        self.failed_step: str | None = None

    def flash(self, root_img: Path) -> None:
        """TEST DOUBLE of l4t_initrd_flash.sh with ROOTFS_AB=1: a GPT with
        NVIDIA's partition names, the root image in both slots, UDA empty."""
        mib = 1 << 20
        slot_mib = (root_img.stat().st_size + 512 * mib) // mib
        uda_mib = 512
        with self.disk.open("wb") as f:
            f.truncate((2 + uda_mib + 2 * slot_mib + 2) * mib)
        script = "label: gpt\n" + "".join(
            f'size={size}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="{name}"\n'
            for name, size in (("UDA", uda_mib), ("APP", slot_mib), ("APP_b", slot_mib)))
        subprocess.run(["sfdisk", "--quiet", str(self.disk)], input=script, text=True, check=True)
        parts = self.parts()
        for label in SLOT_LABELS:
            subprocess.run(["dd", f"if={root_img}", f"of={self.disk}", "bs=1M", "conv=notrunc,sparse",
                            f"seek={parts[label].start}", "oflag=seek_bytes", "status=none"], check=True)
        self.uefi.flash()

    def parts(self) -> dict[str, qemu.Partition]:
        return qemu.partitions(self.disk)

    def state(self) -> tuple[str, dict]:
        return qemu.update_state(self.disk, self.parts()["UDA"])

    def power_on(self) -> int:
        slot = self.uefi.power_on()
        self.vm.boot_args = Uefi.launcher(self.disk, self.parts()[SLOT_LABELS[slot]], slot,
                                          self.workdir / "boot")
        self.vm.start()
        self.vm.phase(f"UEFI double: slot {'AB'[slot]}; {self.uefi.read()}; "
                      f"append {shlex.quote(self.vm.boot_args.append)}")
        return slot

    def end_of_boot(self, why: str, timeout: float) -> None:
        self.vm.wait_exit(slow(timeout), why)
        qemu.replay_journal(self.disk, self.parts()["UDA"])

    def boot_line(self) -> str:
        line = self.vm.wait_serial("nusa-boot: ", timeout=slow(200))
        self.vm.phase(f"console: {line.strip()}")
        return line


@pytest.fixture(scope="module")
def board(fleet, tmp_path_factory):
    b = Board(fleet, tmp_path_factory.mktemp("jetson-board"))
    yield b
    b.vm.kill()
    b.vm.save_artifacts(ARTIFACTS / "last-run")


@pytest.fixture(autouse=True)
def _in_order(request, board):
    with qemu.in_order(request, board, ARTIFACTS):
        yield


def _ca_from_data(board: Board) -> Path:
    """nusad's generated local CA, as an operator would fetch it once."""
    ca = board.workdir / "ca.pem"
    text = qemu.ext4_read(board.disk, board.parts()["UDA"], "/nusa/tls/ca.pem")
    assert text and "BEGIN CERTIFICATE" in text, "no CA under /data/nusa/tls"
    ca.write_text(text)
    return ca


def _infer(board: Board, rows: list[int]) -> str:
    x, expected = nt.golden_rows(rows)
    body, headers = nt.binary_infer_request(x)
    resp = nt.https1(board.appliance, "POST", nt.infer_path(), body, headers, timeout=120)
    nt.assert_infer_ok(resp, expected, binary=True)
    return nt.served_by(resp)


# --------------------------------------------------------------------------
# The story


def test_1_first_boot_makes_data_and_serves(board, record_property):
    """Boot 1 (slot A, 1.0.0): UDA gets its file system, the identity and
    the local CA are made, the gateway serves; nothing to update."""
    assert board.power_on() == 0
    line = board.boot_line()
    assert f"slot a release {BASE} is up" in line and "failed units: none" in line, line
    record_property("boot_to_settled_s", round(board.vm.elapsed(), 1))
    serial = board.vm.serial()
    assert "nusa-firstboot: device identity" in serial
    # nusad made a local CA on the data partition (no TLS was
    # provisioned); the test takes it from the disk after the power button
    # (virt's GPIO power key; systemd-logind powers off).
    board.vm.shutdown(timeout=slow(60))
    qemu.replay_journal(board.disk, board.parts()["UDA"])
    _ca_from_data(board)
    board.appliance = qemu.Appliance(board.vm.port, board.workdir / "ca.pem")
    identity = qemu.ext4_read(board.disk, board.parts()["UDA"], "/identity")
    assert identity and len(identity.strip()) == 32, identity
    board.identity = identity
    st = board.uefi.read()
    assert (st["current"], st["ok0"], st["retry0"]) == ("0", "1", "3"), \
        f"the accepted boot was not confirmed to the firmware: {st}"

    # Boot 2 (slot A again): serves tiny-cnn with the golden outputs,
    # verified against its CA, over HTTP/1.1 and HTTP/3.
    assert board.power_on() == 0
    t = board.vm.wait_ready(board.appliance, timeout=slow(240))
    record_property("boot_to_ready_s", round(t, 1))
    print(f"\nboot {board.vm.boot}: ready {t:.1f} s after QEMU started (TCG, aarch64)")
    assert _infer(board, [0, 1, 2, 3]) == "local"
    import h3client
    x, expected = nt.golden_rows([5])
    body, headers = nt.binary_infer_request(x)
    resp = h3client.h3_request(board.appliance, "POST", nt.infer_path(), body, headers, timeout=120)
    nt.assert_infer_ok(resp, expected, binary=True)
    board.vm.phase("aarch64 inference over HTTP/1.1 and HTTP/3 matches the goldens")
    line = board.boot_line()
    assert f"slot a release {BASE} is up" in line and "failed units: none" in line, line
    assert "nusa-firstboot: device identity" not in board.vm.serial(), "first boot ran again"


def test_2_release_goes_to_the_other_slot_and_is_marked_good(board):
    """1.1.0 is published: written to APP_b, set active with nvbootctrl,
    booted by the firmware, passes the gate, marked successful."""
    print(board.fleet.publish(GOOD))
    board.vm.phase(f"published {GOOD}")
    board.vm.wait_serial(r"update planned.*version=1\.1\.0", timeout=slow(60), regex=True)
    board.end_of_boot("the updater's reboot into slot B", timeout=300)
    name, fields = board.state()
    assert name == "Rebooting" and fields["slot"] == "B", (name, fields)
    st = board.uefi.read()
    assert (st["active"], st["ok1"], st["status1"]) == ("1", "0", "normal"), st
    # Slot A, the fallback, was confirmed on this boot too (its retry back
    # to the full count), whatever state the update was in at the gate.
    assert (st["ok0"], st["retry0"], st["status0"]) == ("1", "3", "normal"), st
    served = [r for r in board.fleet.server.requests if "root.img" in r]
    image_bytes = (board.fleet.releases[GOOD] / "root.img").stat().st_size
    ranged = sum(int(m.group(2)) - int(m.group(1)) + 1
                 for r in served for m in [re.search(r"bytes=(\d+)-(\d+)", r)] if m)
    print(f"\nroot.img {image_bytes} bytes; fetched in ranges: {ranged} bytes ({len(served)} requests)")
    assert 0 < ranged < image_bytes // 4, (ranged, image_bytes)

    assert board.power_on() == 1
    board.vm.wait_ready(board.appliance, timeout=slow(240))
    line = board.boot_line()
    assert f"slot b release {GOOD} is up" in line and f"update: {GOOD} good in slot B" in line, line
    assert _infer(board, [0, 1]) in ("local", "cache")
    st = board.uefi.read()
    assert (st["current"], st["ok1"], st["retry1"]) == ("1", "1", "3"), st


def test_3_broken_release_falls_back_and_is_not_retried(board):
    """1.2.0's gateway never becomes ready: the gate sends the board back
    to slot B with nvbootctrl, the release is recorded bad and not tried
    again, and slot B stays confirmed."""
    print(board.fleet.publish(BROKEN))
    board.vm.phase(f"published {BROKEN} (broken)")
    board.end_of_boot("the updater's reboot into slot A", timeout=300)
    name, fields = board.state()
    assert (name, fields["release"]["version"], fields["slot"]) == ("Rebooting", BROKEN, "A"), fields

    assert board.power_on() == 0
    board.end_of_boot("the health gate's rollback reboot", timeout=HEALTH_TIMEOUT_S + 300)
    name, fields = board.state()
    assert name == "Failed", (name, fields)

    assert board.power_on() == 1
    board.vm.wait_ready(board.appliance, timeout=slow(240))
    line = board.boot_line()
    assert f"slot b release {GOOD} is up" in line and "failed units: none" in line, line
    assert f"bad {BROKEN}" in line, line
    board.vm.wait_serial("recorded bad", timeout=slow(90))
    st = board.uefi.read()
    assert (st["current"], st["active"], st["ok1"], st["retry1"]) == ("1", "1", "1", "3"), \
        f"slot B, back from the rollback, was not confirmed: {st}"
    board.vm.shutdown(timeout=slow(60))
    qemu.replay_journal(board.disk, board.parts()["UDA"])
    identity = qemu.ext4_read(board.disk, board.parts()["UDA"], "/identity")
    assert identity == board.identity

"""The appliance image boots in QEMU + OVMF and serves, seen from the host.

    .venv/bin/python -m pytest -q tests/image/test_boot.py

The session builds the image once with image/build (as root, through
`sudo -n` when not root), with TLS material the test makes as a fleet CA
would, so the client verifies the appliance's certificate properly. Set
NUSA_IMAGE_OUT to an image/build output folder to reuse it (it must have been
built by this test: it holds the test's CA in test-tls/), and
NUSA_IMAGE_BIN_DIR to take prebuilt nusad/nusactl instead of cargo
(NUSA_IMAGE_BUILD_ARGS: more image/build arguments).

QEMU runs with KVM where KVM can run firmware, else with TCG emulation
(qemu.accel(); NUSA_QEMU_ACCEL=kvm|tcg forces it): the ready deadline is
180 s with KVM and 600 s with TCG.

The disk is a sparse copy of disk.img, 2 GiB larger than built, so the first
boot has to grow the data partition. Serial console, phase log (milestones
with seconds after QEMU started) and QEMU's output are kept under
tests/image/artifacts/<test>/ (always overwritten; look there when a test
fails).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import qemu
from qemu import nt

VERSION = "0.9.0"
GROW = 2 << 30
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = pytest.mark.timeout(2400)

# The console of each boot of this module, for test_no_unit_failed_during_boot.
CONSOLES: dict[str, str] = {}


def _require_host() -> None:
    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap", "mkfs.erofs", "sfdisk", "debugfs", "mdir")
               if shutil.which(t) is None]
    missing += [str(p) for p in (qemu.OVMF_CODE, qemu.OVMF_VARS) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run image/deps")


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Path:
    """An image/build output folder whose data partition holds test-tls/."""
    _require_host()
    reuse = os.environ.get("NUSA_IMAGE_OUT")
    if reuse and (Path(reuse) / "disk.img").exists() and (Path(reuse) / "test-tls" / "ca.pem").exists():
        return Path(reuse)
    out = Path(reuse) if reuse else tmp_path_factory.mktemp("image") / "out"
    out.mkdir(parents=True, exist_ok=True)
    tls = qemu.make_tls(out / "test-tls")
    secs = qemu.build_image(out, tls, VERSION, out.parent / "build.log")
    print(f"\nimage/build took {secs:.0f} s")
    return out


@pytest.fixture(scope="module")
def disk(image, tmp_path_factory) -> Path:
    """One appliance's disk for this module: both boots use it, in order."""
    d = tmp_path_factory.mktemp("disk") / "disk.raw"
    qemu.sparse_copy(image / "disk.img", d, grow_by=GROW)
    return d


@pytest.fixture
def vm(request, disk, tmp_path) -> qemu.Vm:
    v = qemu.Vm(disk=disk, workdir=tmp_path / "vm", port=nt.free_port())
    yield v
    v.kill()
    v.save_artifacts(ARTIFACTS / request.node.name)


def _boot_and_serve(vm: qemu.Vm, image: Path, record_property) -> qemu.Appliance:
    appliance = qemu.Appliance(vm.port, image / "test-tls" / "ca.pem")
    vm.start()
    t = vm.wait_ready(appliance, timeout=180 if qemu.accel() == "kvm" else 600)
    record_property("boot_to_ready_s", round(t, 1))
    record_property("accel", qemu.accel())
    print(f"\nboot to ready: {t:.1f} s ({qemu.accel()})")

    # A tiny-cnn inference over HTTP/1.1 (binary tensors), checked against
    # the golden outputs computed by onnxruntime.
    x, expected = nt.golden_rows(range(4))
    body, headers = nt.binary_infer_request(x)
    resp = nt.https1(appliance, "POST", nt.infer_path(), body, headers, timeout=60)
    nt.assert_infer_ok(resp, expected, binary=True)
    # "cache" on the second boot: the response cache's disk tier is on the
    # data partition and survived the reboot.
    source = nt.served_by(resp)
    assert source in ("local", "cache"), resp
    vm.phase(f"inference over HTTP/1.1 matches the goldens (served by: {source})")

    # The same over HTTP/3, on the UDP port QEMU forwards.
    import h3client
    x1, expected1 = nt.golden_rows([5])
    body, headers = nt.binary_infer_request(x1)
    resp = h3client.h3_request(appliance, "POST", nt.infer_path(), body, headers, timeout=60)
    nt.assert_infer_ok(resp, expected1, binary=True)
    vm.phase("inference over HTTP/3 matches the goldens")

    # The boot has settled once nusa-boot-report.service (after the health
    # gate) has put its line on the console.
    line = vm.wait_serial("nusa-boot: ", timeout=120 if qemu.accel() == "kvm" else 300)
    vm.phase(f"console: {line.strip()}")
    return appliance


def test_first_boot_serves_grows_data_and_makes_identity(vm, disk, image, record_property):
    parts = qemu.partitions(disk)
    assert list(parts) == ["esp", "root-a", "root-b", "data"], parts
    built_data = parts["data"].size

    _boot_and_serve(vm, image, record_property)
    serial = vm.serial()
    CONSOLES["first boot"] = serial
    assert "nusa.slot=a" in serial, "kernel command line without nusa.slot=a on the console"
    vm.shutdown()

    # From the host, after power-off: what the first boot left on the disk.
    parts = qemu.partitions(disk)
    data = parts["data"]
    disk_end = disk.stat().st_size - 34 * qemu.SECTOR  # backup GPT
    assert data.size > built_data + GROW // 2, f"data partition not grown: {data}"
    assert data.start + data.size >= disk_end - (1 << 20), f"data does not reach the disk's end: {data}"
    fs = qemu.ext4_size(disk, data)
    assert fs > built_data + GROW // 2, f"ext4 on data not grown: {fs} bytes, partition {data.size}"
    identity = qemu.ext4_read(disk, data, "/identity")  # /data/identity
    assert identity and len(identity.strip()) == 32, f"identity: {identity!r}"
    assert int(identity.strip(), 16) != 0
    # The provisioned certificate was used, nothing generated next to it.
    assert qemu.ext4_read(disk, data, "/nusa/tls/server.pem") == (image / "test-tls" / "server.pem").read_text()
    # Slot A's entry is still the provisioned, good one (no counter).
    assert qemu.fat_list(disk, parts["esp"], "/loader/entries") == ["nusa-a.conf"]
    (vm.workdir / "identity").write_text(identity)


def test_second_boot_keeps_identity(vm, disk, image, record_property, tmp_path_factory):
    parts = qemu.partitions(disk)
    before = qemu.ext4_read(disk, parts["data"], "/identity")
    if before is None:
        pytest.skip("the first boot did not complete")
    _boot_and_serve(vm, image, record_property)
    CONSOLES["second boot"] = vm.serial()
    assert "nusa-firstboot: device identity" not in vm.serial(), "first boot ran again"
    vm.shutdown()
    assert qemu.ext4_read(disk, parts["data"], "/identity") == before


def test_no_unit_failed_during_boot():
    """systemd reported no failed unit on the console of either boot (the
    units, sandbox and config files working together on the real system)."""
    if not CONSOLES:
        pytest.skip("no boot got far enough")
    marks = ("[FAILED]", "Failed to start ", "Failed with result")
    failed = [f"{boot}: {line.strip()}" for boot, text in CONSOLES.items()
              for line in text.splitlines()
              if any(m in line for m in marks)
              or ("nusa-boot: " in line and not line.rstrip().endswith("failed units: none"))]
    assert not failed, "units failed during boot:\n" + "\n".join(failed)

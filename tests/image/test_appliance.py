"""The appliance's life in QEMU + OVMF, seen from the host: it boots and
serves, updates itself from a TUF repository, rolls back from a broken
release by itself, and survives a power cut in the middle of writing an
update.

    .venv/bin/python -m pytest -q tests/image/test_appliance.py

One appliance, one disk, booted again and again; the tests run in order and
each starts where the previous one left the box (a test whose predecessor
failed is skipped). The session:

- makes a TUF repository with `nusactl release keygen/init` (the release
  engineer's tool, built here) and serves it on the host's loopback with
  HTTP Range (repo_server.py); the guest reaches it as 10.0.2.2 through QEMU's
  user network, nothing leaves the machine;
- builds the appliance (1.0.0) with image/build, trusting that repository's
  root, with TLS material made as a fleet CA would (the client verifies the
  appliance's certificate), and three releases with the same command: 1.1.0
  and 1.3.0 (good) and 1.2.0 (broken: its nusad.toml has a key nusad
  refuses, so the gateway never becomes ready);
- publishes tiny-cnn version 1 into a model repository (`nusactl models
  init/publish`) served beside the releases at /models/: the appliance is in
  signed mode (an overlay adds `[models]` to its nusad.toml and the model
  repository's root), pulls it at first boot and serves it from the data
  partition after every OS update without downloading it again;
- every image carries overlays/test/: the update timer looks every 10 s
  instead of every 6 h, and info-level journal lines (the updater's and the
  health gate's steps among them) also go to the serial console. The health gate's timeout is 30 s
  (--update-setting), not 300 s.

QEMU runs with -no-reboot: a reboot of the guest ends QEMU, the test reads
the disk from the host (the updater's state on the data partition, the
boot entries on the ESP) and starts QEMU again with the same disk and UEFI
variables. Every boot's console, the phase log (milestones with seconds
after QEMU started) and QEMU's output are kept under
tests/image/artifacts/<test>/ when a test fails (always for the last one).

Environment: NUSA_IMAGE_BIN_DIR takes prebuilt nusad/nusactl (release
builds) instead of cargo; NUSA_IMAGE_WORK keeps the images and repository in
that folder (rebuilt each session); NUSA_QEMU_ACCEL=kvm|tcg forces the
accelerator (qemu.accel() probes whether KVM can run firmware).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import qemu
from qemu import nt
from repo_server import RepoServer

VARIANT = "x86_64-rtx"
BASE, GOOD, BROKEN, FINAL = "1.0.0", "1.1.0", "1.2.0", "1.3.0"
GROW = 2 << 30
HEALTH_TIMEOUT_S = 30
HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
OVERLAY_TEST = HERE / "overlays" / "test"
OVERLAY_BROKEN = HERE / "overlays" / "broken"

pytestmark = pytest.mark.timeout(3600)


def slow(seconds: float) -> float:
    """A deadline, stretched under TCG emulation (several times slower)."""
    return seconds if qemu.accel() == "kvm" else seconds * 4


# --------------------------------------------------------------------------
# The fleet side: repository, images, releases


class Fleet:
    def __init__(self, work: Path, nusactl: Path):
        self.work = work
        self.nusactl = nusactl
        self.keys = work / "tuf" / "keys"
        self.repo = work / "tuf" / "repo"
        self.releases: dict[str, Path] = {}
        self.server: RepoServer | None = None

    def run(self, *args: str) -> str:
        proc = subprocess.run([str(self.nusactl), *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"nusactl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def init_repository(self) -> None:
        shutil.rmtree(self.work / "tuf", ignore_errors=True)
        self.run("release", "keygen", "--keys", str(self.keys))
        self.run("release", "init", "--repo", str(self.repo), "--keys", str(self.keys))

    @property
    def trusted_root(self) -> Path:
        return self.repo / "metadata" / "root.json"

    @property
    def model_repo(self) -> Path:
        """The model repository, served beside the releases (/models/)."""
        return self.repo / "models"

    def init_model_repository(self) -> None:
        """Signed models: tiny-cnn version 1, published as a release
        engineer would; the appliance pulls it at first boot."""
        keys = self.work / "model-keys"
        shutil.rmtree(keys, ignore_errors=True)
        self.run("models", "init", "--repo", str(self.model_repo), "--keys", str(keys))
        src = self.work / "tiny-cnn-1"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        shutil.copy(nt.DEMO_MODEL, src / "model.onnx")
        shutil.copy(nt.DEMO_MODEL.parent.parent / "config.toml", src / "config.toml")
        self.run("models", "publish", "--repo", str(self.model_repo), "--keys", str(keys),
                 "--model", nt.MODEL, "--version", "1", "--dir", str(src),
                 "--source-revision", "demo", "--training-run", "demo", "--publisher", "tests/image")

    def signed_models_overlay(self, port: int) -> Path:
        """/etc/nusa/nusad.toml in signed mode (the image's, plus [models])
        and the model repository's root."""
        ov = self.work / "overlay-signed-models"
        shutil.rmtree(ov, ignore_errors=True)
        (ov / "etc" / "nusa").mkdir(parents=True)
        base = (qemu.REPO_ROOT / "image" / "lib" / "nusad.toml").read_text()
        (ov / "etc" / "nusa" / "nusad.toml").write_text(
            base + "\n# tests/image: signed models from the test's model repository.\n"
            f'[models]\nrepository = "http://10.0.2.2:{port}/models"\n'
            'trusted_root = "/etc/nusa/model-root.json"\npoll_interval_s = 5\n')
        shutil.copy(self.model_repo / "metadata" / "root.json", ov / "etc" / "nusa" / "model-root.json")
        return ov

    def model_downloads(self) -> int:
        """Requests for the model's weights (model.onnx) the model
        repository got; its signed metadata and manifests are read at every
        poll."""
        assert self.server is not None
        return sum(1 for r in self.server.requests
                   if r.split(" ")[1].startswith("/models/targets/")
                   and r.split(" ")[1].endswith("/model.onnx"))

    def publish(self, version: str) -> str:
        out = self.releases[version]
        return self.run("release", "add", "--repo", str(self.repo), "--keys", str(self.keys),
                        "--variant", VARIANT, "--version", version, "--image", str(out / "root.img"),
                        "--boot-file", f"vmlinuz={out / 'vmlinuz'}",
                        "--boot-file", f"initrd.img={out / 'initrd.img'}")


def _require_host() -> None:
    missing = [t for t in ("qemu-system-x86_64", "mmdebstrap", "mkfs.erofs", "sfdisk", "debugfs", "mdir")
               if shutil.which(t) is None]
    missing += [str(p) for p in (qemu.OVMF_CODE, qemu.OVMF_VARS) if not p.exists()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run image/deps")


def _bin_dir() -> Path:
    if os.environ.get("NUSA_IMAGE_BIN_DIR"):
        return Path(os.environ["NUSA_IMAGE_BIN_DIR"]).resolve()
    for package in ("nusad", "nusactl"):  # one per call: no feature unification between them
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", package],
                       cwd=qemu.REPO_ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", qemu.REPO_ROOT / "target"))
    return (qemu.REPO_ROOT / target).resolve() / "release"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    _require_host()
    work = Path(os.environ["NUSA_IMAGE_WORK"]) if os.environ.get("NUSA_IMAGE_WORK") \
        else tmp_path_factory.mktemp("fleet")
    work.mkdir(parents=True, exist_ok=True)
    bins = _bin_dir()
    f = Fleet(work, bins / "nusactl")
    f.init_repository()
    f.init_model_repository()
    # The server first: its port goes into the image's update.toml.
    (f.repo / "targets").mkdir(parents=True, exist_ok=True)
    f.server = RepoServer(f.repo)
    with f.server:
        # One mmdebstrap for the four builds (--base-cache), the rest is ours.
        # The appliance is in signed mode: it serves only models it pulled
        # from the model repository (the broken release's nusad.toml
        # replaces this one).
        common = ["--bin-dir", str(bins), "--base-cache", str(work / "base-cache"),
                  "--trusted-root", str(f.trusted_root),
                  "--update-repository", f"http://10.0.2.2:{f.server.port}",
                  "--update-setting", f"health_timeout_s = {HEALTH_TIMEOUT_S}",
                  # The repository is the host, 10.0.2.2 to QEMU, over plain HTTP: an
                  # explicit choice the updater logs (it refuses http:// off loopback).
                  "--update-setting", "allow_insecure_transport = true",
                  "--overlay", str(OVERLAY_TEST),
                  "--overlay", str(f.signed_models_overlay(f.server.port))]
        tls = qemu.make_tls(work / "test-tls")
        # An admin key provisioned with the box (image/build --keys): the
        # appliance's public port listens off loopback and wants keys.
        f.api_key = subprocess.run([str(bins / "nusactl"), "keys", "generate"], check=True,
                                   capture_output=True, text=True).stdout.strip()
        keys = work / "bootstrap-keys.toml"
        keys.write_text(f'[[keys]]\nname = "fleet-admin"\nrole = "admin"\nkey = "{f.api_key}"\n')
        keys.chmod(0o600)
        for version, tls_arg, extra in ((BASE, tls, ["--keys", str(keys)]), (GOOD, None, []),
                                        (BROKEN, None, ["--overlay", str(OVERLAY_BROKEN)]),
                                        (FINAL, None, [])):
            out = work / f"image-{version}"
            secs = qemu.build_image(out, tls_arg, version, work / f"build-{version}.log", common + extra)
            print(f"\nimage/build --version {version}: {secs:.0f} s")
            f.releases[version] = out
            if version != BASE:
                # A release is root.img and the boot files; the rest of the
                # build (disk, ESP and data images) is a gigabyte of disk.
                for name in ("disk.img", "disk.img.bmap", "esp.img", "data.img"):
                    (out / name).unlink(missing_ok=True)
        f.tls = tls
        yield f


class Box:
    """The appliance under test: its disk, its VM, what the tests learnt."""

    def __init__(self, fleet: Fleet, workdir: Path):
        self.fleet = fleet
        self.disk = workdir / "disk.raw"
        qemu.sparse_copy(fleet.releases[BASE] / "disk.img", self.disk, grow_by=GROW)
        self.vm = qemu.Vm(disk=self.disk, workdir=workdir / "vm", port=nt.free_port())
        self.appliance = qemu.Appliance(self.vm.port, fleet.tls["ca"])
        self.consoles: dict[int, str] = {}
        self.failed_step: str | None = None
        self.identity: str | None = None
        self.model_downloads = 0

    def parts(self) -> dict[str, qemu.Partition]:
        return qemu.partitions(self.disk)

    def state(self) -> tuple[str, dict]:
        return qemu.update_state(self.disk, self.parts()["data"])

    def entries(self) -> list[str]:
        return qemu.fat_list(self.disk, self.parts()["esp"], "/loader/entries")

    def boot(self) -> None:
        self.vm.start()

    def end_of_boot(self, why: str, timeout: float) -> None:
        self.vm.wait_exit(slow(timeout), why)
        self.powered_off()

    def powered_off(self) -> None:
        """After any end of a boot (reboot, power button, power cut)."""
        self.consoles[self.vm.boot] = self.vm.serial()
        qemu.replay_journal(self.disk, self.parts()["data"])

    def wait_ready(self) -> float:
        t = self.vm.wait_ready(self.appliance, timeout=slow(180))
        print(f"\nboot {self.vm.boot}: ready {t:.1f} s after QEMU started ({qemu.accel()})")
        return t

    def boot_line(self) -> str:
        """The boot-report line: slot, release, updater state, failed units."""
        line = self.vm.wait_serial("nusa-boot: ", timeout=slow(150))
        self.vm.phase(f"console: {line.strip()}")
        return line

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.fleet.api_key}"}

    def models(self) -> dict:
        return nt.https1(self.appliance, "GET", "/v2/nusa/models", headers=self.auth,
                         timeout=60).json()

    def wait_model_pulled(self) -> dict:
        """tiny-cnn version 1 pulled from the model repository and serving."""
        deadline = time.monotonic() + slow(120)
        while True:
            st = self.models()
            m = next((m for m in st.get("models", []) if m["name"] == nt.MODEL), None)
            if st.get("mode") == "signed" and m and m["serving"] == 1 and m["state"] == "READY":
                self.vm.phase("tiny-cnn 1 pulled from the model repository and serving")
                return st
            assert time.monotonic() < deadline, f"tiny-cnn never pulled: {st}"
            time.sleep(1)

    def pulls(self) -> list[dict]:
        events = nt.https1(self.appliance, "GET", f"/v2/nusa/models/{nt.MODEL}/history",
                           headers=self.auth, timeout=60).json()["events"]
        return [e for e in events if e["event"] == "pull"]

    def infer(self, rows: list[int]) -> str:
        x, expected = nt.golden_rows(rows)
        body, headers = nt.binary_infer_request(x)
        resp = nt.https1(self.appliance, "POST", nt.infer_path(), body, {**headers, **self.auth},
                         timeout=60)
        nt.assert_infer_ok(resp, expected, binary=True)
        return nt.served_by(resp)


@pytest.fixture(scope="module")
def box(fleet, tmp_path_factory):
    b = Box(fleet, tmp_path_factory.mktemp("appliance"))
    yield b
    b.vm.kill()
    b.vm.save_artifacts(ARTIFACTS / "last-run")


@pytest.fixture(autouse=True)
def _in_order(request, box):
    with qemu.in_order(request, box, ARTIFACTS):
        yield


# --------------------------------------------------------------------------
# The story


def test_1_first_boot_serves_over_https(box, record_property):
    """Boot 1 (slot A, 1.0.0): ready, tiny-cnn's golden outputs over HTTP/1.1
    and HTTP/3, nothing to update yet."""
    parts = box.parts()
    assert list(parts) == ["esp", "root-a", "root-b", "data"], parts
    box.built_data = parts["data"].size
    box.boot()
    record_property("boot_to_ready_s", round(box.wait_ready(), 1))
    record_property("accel", qemu.accel())
    # Signed mode: tiny-cnn comes from the model repository, verified.
    box.wait_model_pulled()
    assert box.fleet.model_downloads() >= 1
    box.model_downloads = box.fleet.model_downloads()
    # Off loopback, the public port wants an API key by default.
    x, expected = nt.golden_rows([5])
    body, headers = nt.binary_infer_request(x)
    nt.assert_error(nt.https1(box.appliance, "POST", nt.infer_path(), body, headers, timeout=60),
                    401, ["no API key"])
    assert box.infer([0, 1, 2, 3]) == "local"
    box.vm.phase("inference over HTTP/1.1 with the provisioned key matches the goldens")
    import h3client
    resp = h3client.h3_request(box.appliance, "POST", nt.infer_path(), body,
                               {**headers, **box.auth}, timeout=60)
    nt.assert_infer_ok(resp, expected, binary=True)
    box.vm.phase("inference over HTTP/3 matches the goldens")
    line = box.boot_line()
    assert f"slot a release {BASE} is up" in line, line
    assert "nusa.slot=a" in box.vm.serial()
    # A pin set through the admin API (an admin key on the public port)
    # must outlive the OS update (test 4).
    r = nt.https1(box.appliance, "POST", f"/v2/nusa/models/{nt.MODEL}/pin", b'{"version": 1}',
                  box.auth, timeout=60)
    assert r.status == 200 and r.json()["serving"] == 1, r
    # The timer has looked (and found an empty repository) by now or soon.
    box.vm.wait_serial("update state from=Checking", timeout=slow(60))


def test_2_release_is_downloaded_written_and_armed(box):
    """1.1.0 is published; the running box finds it, writes slot B, arms it
    with boot counting and reboots."""
    print(box.fleet.publish(GOOD))
    box.vm.phase(f"published {GOOD}")
    box.vm.wait_serial(r"update planned.*version=1\.1\.0", timeout=slow(60), regex=True)
    box.end_of_boot("the updater's reboot into slot B", timeout=300)
    name, fields = box.state()
    assert name == "Rebooting", (name, fields)
    assert fields["release"]["version"] == GOOD and fields["slot"] == "B", fields
    entries = box.entries()
    assert "nusa-a.conf" in entries and "nusa-b+3.conf" in entries, entries
    # Delta: the chunks 1.0.0 already had were copied from slot A.
    served = [r for r in box.fleet.server.requests if "root.img" in r]
    image_bytes = (box.fleet.releases[GOOD] / "root.img").stat().st_size
    ranged = sum(int(m.group(2)) - int(m.group(1)) + 1
                 for r in served for m in [re.search(r"bytes=(\d+)-(\d+)", r)] if m)
    print(f"\nroot.img {image_bytes} bytes; fetched in ranges: {ranged} bytes ({len(served)} requests)")
    assert 0 < ranged < image_bytes // 4, (ranged, image_bytes, served[:5])


def test_3_first_boot_grew_data_and_made_identity(box):
    """What the first boot left on the data partition, read from the host."""
    parts = box.parts()
    data = parts["data"]
    disk_end = box.disk.stat().st_size - 34 * qemu.SECTOR  # backup GPT
    assert data.size > box.built_data + GROW // 2, f"data partition not grown: {data}"
    assert data.start + data.size >= disk_end - (1 << 20), f"data does not reach the disk's end: {data}"
    fs = qemu.ext4_size(box.disk, data)
    assert fs > box.built_data + GROW // 2, f"ext4 on data not grown: {fs} bytes, partition {data.size}"
    identity = qemu.ext4_read(box.disk, data, "/identity")
    assert identity and len(identity.strip()) == 32 and int(identity.strip(), 16) != 0, identity
    box.identity = identity
    # The provisioned certificate was used, nothing generated next to it.
    assert qemu.ext4_read(box.disk, data, "/nusa/tls/server.pem") == box.fleet.tls["cert"].read_text()


def test_4_new_slot_passes_health_gate_and_is_marked_good(box):
    """Boot 2 (slot B, 1.1.0): the gate sees the gateway serve and blesses
    the slot; identity and the edge cache survived the update."""
    box.boot()
    box.wait_ready()
    line = box.boot_line()
    assert f"slot b release {GOOD} is up" in line and f"update: {GOOD} good in slot B" in line, line
    assert "nusa-firstboot: device identity" not in box.vm.serial(), "first boot ran again"
    assert box.infer([0, 1, 2, 3]) in ("local", "cache")
    assert box.infer([7]) == "local"
    # The key store, the pin and the audit log came through the update.
    models = box.models()
    assert models["models"][0]["pinned"] == 1, models
    # So did the pulled model: serving in signed mode on the new slot, from
    # the data partition, never downloaded again.
    assert models["mode"] == "signed" and models["models"][0]["serving"] == 1, models
    assert [e.get("version") for e in box.pulls()] == [1], box.pulls()
    assert box.fleet.model_downloads() == box.model_downloads, box.fleet.server.requests[-10:]
    audit = nt.https1(box.appliance, "GET", "/v2/nusa/audit", headers=box.auth, timeout=60).json()
    got = [(r["action"], r["actor"]["id"]) for r in audit["records"]]
    # The pin, then the updater's steps (as root, over nusad's admin socket).
    assert got[0] == ("model.pin", "fleet-admin"), got
    for step in ("update.download", "update.apply", "update.mark_good"):
        assert (step, "uid 0") in got, got


def test_5_broken_release_rolls_back_by_itself_and_is_not_retried(box):
    """1.2.0's gateway never becomes ready: the gate fails, the box goes back
    to slot B by itself, reports 1.2.0 as bad and does not install it again."""
    print(box.fleet.publish(BROKEN))
    box.vm.phase(f"published {BROKEN} (broken)")
    box.end_of_boot("the updater's reboot into slot A", timeout=300)
    # The ESP now: B blessed (no counter), A on trial.
    entries = box.entries()
    assert "nusa-b.conf" in entries and "nusa-a+3.conf" in entries, entries
    name, fields = box.state()
    assert (name, fields["release"]["version"], fields["slot"]) == ("Rebooting", BROKEN, "A"), fields

    # Boot 3: slot A with 1.2.0. Never ready; the gate gives up and reboots.
    box.boot()
    box.vm.wait_serial("nusa.slot=a", timeout=slow(60))
    deadline = time.monotonic() + slow(HEALTH_TIMEOUT_S + 180)
    while box.vm.alive() and time.monotonic() < deadline:
        try:
            resp = nt.https1(box.appliance, "GET", "/v2/health/ready", timeout=5)
            assert resp.status != 200, "the broken release's gateway answered ready"
        except OSError:
            pass
        time.sleep(2)
    box.end_of_boot("the health gate's rollback", timeout=60)
    console = box.consoles[box.vm.boot]
    assert "update state from=PendingHealth to=Failed" in console, "no health gate failure on the console"

    # Boot 4: back on slot B, 1.1.0, by itself.
    box.boot()
    box.wait_ready()
    line = box.boot_line()
    assert f"slot b release {GOOD} is up" in line, line
    assert f"bad {BROKEN}" in line, line
    # The gate passes on the slot that came back: the failure is the
    # update's, reported, not this boot's.
    assert line.rstrip().endswith("failed units: none"), line
    # The timer looks again (every 10 s) and refuses 1.2.0.
    refusal = box.vm.wait_serial(r"release not taken.*1\.2\.0", timeout=slow(90), regex=True)
    box.vm.phase(f"console: {refusal.strip()}")
    assert "update planned" not in box.vm.serial(), "1.2.0 was tried again"
    # The history's bad-release list is read from the disk in test 6, once
    # the VM is off: a read of the live file system can miss a file the
    # guest rewrote (its journal not yet checkpointed).


def test_6_power_cut_while_writing_then_update_completes(box):
    """1.3.0 is published; QEMU is killed while the updater writes slot A.
    The box comes back on slot B (untouched) and the update completes."""
    print(box.fleet.publish(FINAL))
    box.vm.phase(f"published {FINAL}")
    line = box.vm.wait_serial(r"write: [1-8]0% \(", timeout=slow(180), regex=True)
    box.vm.kill()
    box.vm.phase(f"power cut at: {line.strip()}")
    box.powered_off()
    name, fields = box.state()
    assert name == "Writing" and fields["release"]["version"] == FINAL, (name, fields)
    # Slot A has no boot entry while it is half written: B is what boots.
    assert not [e for e in box.entries() if e.startswith("nusa-a")], box.entries()

    # Boot 5: slot B, serves, the health gate passes and leaves the write to
    # the timer's run, which writes A again and reboots.
    box.boot()
    box.wait_ready()
    line = box.boot_line()
    assert f"slot b release {GOOD} is up" in line and f"writing {FINAL}" in line, line
    assert line.rstrip().endswith("failed units: none"), line
    box.end_of_boot("the updater's reboot into slot A", timeout=400)
    name, fields = box.state()
    assert (name, fields["release"]["version"], fields["slot"]) == ("Rebooting", FINAL, "A"), fields

    # Boot 6: slot A, 1.3.0, good.
    box.boot()
    box.wait_ready()
    line = box.boot_line()
    assert f"slot a release {FINAL} is up" in line and f"update: {FINAL} good in slot A" in line, line
    assert box.infer([0, 1, 2, 3]) in ("local", "cache")
    assert [e.get("version") for e in box.pulls()] == [1], box.pulls()
    assert box.fleet.model_downloads() == box.model_downloads
    # The audit log came through two more updates, with test 5's rollback.
    audit = nt.https1(box.appliance, "GET", "/v2/nusa/audit", headers=box.auth, timeout=60).json()
    got = [(r["action"], r["target"]) for r in audit["records"]]
    assert ("update.rollback", f"release {BROKEN}") in got, got
    assert ("update.mark_good", f"release {FINAL}") in got, got
    box.vm.shutdown(timeout=slow(90))
    box.powered_off()
    assert qemu.ext4_read(box.disk, box.parts()["data"], "/identity") == box.identity
    entries = box.entries()
    assert "nusa-a.conf" in entries and "nusa-b.conf" in entries, entries
    # The state may be a later timer run's (a check the power button cut
    # short); the history has each release's outcome.
    attempts = {a["version"]: a["outcome"]
                for a in qemu.update_history(box.disk, box.parts()["data"])["attempts"]}
    assert attempts.get(GOOD) == "Succeeded" and attempts.get(FINAL) == "Succeeded", attempts
    assert isinstance(attempts.get(BROKEN), dict) and "Failed" in attempts[BROKEN], attempts
    bad = qemu.update_history(box.disk, box.parts()["data"]).get("bad")
    assert BROKEN in str(bad), bad


def test_7_no_unit_failed_on_a_good_boot(box):
    """systemd reported no failed unit on any boot of a good release (the
    units, sandbox and config files working together on the real system);
    the broken release's boot is left out."""
    marks = ("[FAILED]", "Failed to start ", "Failed with result")
    failed = []
    for boot, text in box.consoles.items():
        if f"release {BROKEN} is up" in text or "nusa.slot=a" in text and boot == 3:
            continue
        failed += [f"boot {boot}: {line.strip()}" for line in text.splitlines()
                   if any(m in line for m in marks)
                   or ("nusa-boot: " in line and not line.rstrip().endswith("failed units: none"))]
    assert box.consoles, "no boot got far enough"
    assert not failed, "units failed during boot:\n" + "\n".join(failed)

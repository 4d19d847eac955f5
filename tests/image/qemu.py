"""Helpers for the appliance image tests: building the image, test TLS
material, a QEMU + OVMF virtual machine with the gateway's port forwarded
to the host, and reading the disk back from the host after a shutdown.

Nothing here logs into the guest: everything is observed from outside (the
forwarded HTTPS/HTTP/3 port, the serial console, the disk after power-off),
the way a fleet sees an appliance.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import http.client
import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

import nusatest as nt  # noqa: E402  (golden data, request/response helpers)

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SECTOR = 512
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")

# Milestones on the serial console, in boot order: the phase log records when
# each first appears (seconds after QEMU started).
MILESTONES = [
    ("kernel", "Linux version"),
    ("initramfs", "Run /init as init process"),
    ("root mounted", "Mounting root file system"),
    ("systemd", "Welcome to "),
    ("systemd-repart done", "Finished systemd-repart.service"),
    ("data mounted", "Mounted var-lib-nusa.mount"),
    ("data file system grown", "resized filesystem to"),
    ("first boot identity", "nusa-firstboot: device identity"),
    ("network", "Started systemd-networkd.service"),
    ("nusad socket", "Listening on nusad.socket"),
    ("nusad started", "Started nusad.service"),
    ("multi-user", "Reached target multi-user.target"),
    ("boot settled", "nusa-boot: "),
]


@functools.lru_cache(maxsize=1)
def accel() -> str:
    """"kvm" where KVM runs firmware, else "tcg" (emulation, several times
    slower). NUSA_QEMU_ACCEL=kvm|tcg forces one.

    /dev/kvm is not enough: on our CI machines it is PVM (kvm_pvm, nested
    virtualization without VT-x/AMD-V), which creates VMs but runs only
    PVM-aware 64-bit kernels; OVMF's first instructions end in "KVM internal
    error". So the probe runs OVMF for a few seconds and sees whether it
    survives.
    """
    forced = os.environ.get("NUSA_QEMU_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    with tempfile.TemporaryDirectory() as d:
        vars_fd = Path(d) / "vars.fd"
        shutil.copyfile(OVMF_VARS, vars_fd)
        err = Path(d) / "stderr"
        with err.open("wb") as f:
            proc = subprocess.Popen(
                ["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-m", "256", "-nodefaults",
                 "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
                 "-display", "none", "-serial", "none", "-monitor", "none"],
                stdout=subprocess.DEVNULL, stderr=f)
            try:
                proc.wait(timeout=4)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                # A KVM internal error pauses the VM; QEMU itself lives on.
                text = err.read_text(errors="replace").lower()
                if not any(m in text for m in ("internal error", "emulation failure", "assertion")):
                    return "kvm"
        return "tcg"


def accel_args() -> list[str]:
    return ["-accel", "kvm"] if accel() == "kvm" else ["-accel", "tcg,thread=multi"]


def sudo() -> list[str]:
    return [] if os.geteuid() == 0 else ["sudo", "-n"]


# --------------------------------------------------------------------------
# TLS material for the appliance, as a fleet's CA would issue it


def make_tls(dest: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost (ECDSA P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    dest.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nusa image test fleet CA")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"), x509.DNSName("nusa"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1"))])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nusa appliance")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(san, critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"ca": dest / "ca.pem", "cert": dest / "server.pem", "key": dest / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["key"].chmod(0o600)
    return paths


# --------------------------------------------------------------------------
# Building the image


def build_image(out: Path, tls: dict[str, Path] | None, version: str, log: Path,
                extra: list[str] = ()) -> float:
    """Runs image/build (with the test's TLS material, if given, and more
    arguments); returns its wall time."""
    cmd = [*sudo(), "env", f"PATH={os.environ['PATH']}"]
    for var in ("CARGO_TARGET_DIR", "CARGO_HOME", "RUSTUP_HOME", "SOURCE_DATE_EPOCH"):
        if var in os.environ:
            cmd.append(f"{var}={os.environ[var]}")
    cmd += [str(REPO_ROOT / "image" / "build"), "--version", version, "--out", str(out)]
    if tls:
        cmd += ["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]), "--tls-ca", str(tls["ca"])]
    cmd += [str(a) for a in extra]
    if os.environ.get("NUSA_IMAGE_BIN_DIR"):
        cmd += ["--bin-dir", os.environ["NUSA_IMAGE_BIN_DIR"]]
    cmd += shlex.split(os.environ.get("NUSA_IMAGE_BUILD_ARGS", ""))
    t0 = time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"image/build failed ({proc.returncode}); log {log}:\n{tail}")
    return time.monotonic() - t0


# --------------------------------------------------------------------------
# The disk, read from the host


@dataclass
class Partition:
    name: str
    start: int  # bytes
    size: int   # bytes


def partitions(disk: Path) -> dict[str, Partition]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    assert table.get("sectorsize", SECTOR) == SECTOR
    return {p["name"]: Partition(p["name"], p["start"] * SECTOR, p["size"] * SECTOR)
            for p in table["partitions"]}


def ext4_size(disk: Path, part: Partition) -> int:
    """The ext4 file system's size in bytes (block count x block size)."""
    out = subprocess.run(["dumpe2fs", "-h", f"{disk}?offset={part.start}"], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"].strip()) * int(fields["Block size"].strip())


def ext4_read(disk: Path, part: Partition, path: str) -> str | None:
    """A small file from an ext4 partition, or None when it is not there."""
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", f"{disk}?offset={part.start}"],
                          capture_output=True, text=True)
    if proc.returncode != 0 or "File not found" in proc.stderr:
        return None
    return proc.stdout


def fat_list(disk: Path, part: Partition, path: str) -> list[str]:
    """File names in a folder of the FAT ESP (mtools, no mount)."""
    proc = subprocess.run(["mdir", "-b", "-i", f"{disk}@@{part.start}", f"::{path}"],
                          capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
                          check=True)
    return sorted(Path(line.strip()).name for line in proc.stdout.splitlines() if line.strip())


def replay_journal(disk: Path, part: Partition) -> None:
    """Replays the ext4 journal of a partition left by a power cut (QEMU
    killed), as the next mount would, so that debugfs (which reads the file
    system in place and ignores the journal) sees what the guest had
    fsynced. A no-op after a clean shutdown. Needs root (a loop device)."""
    loop = subprocess.run([*sudo(), "losetup", "--find", "--show", "--offset", str(part.start),
                           "--sizelimit", str(part.size), str(disk)],
                          check=True, capture_output=True, text=True).stdout.strip()
    try:
        proc = subprocess.run([*sudo(), "e2fsck", "-y", "-E", "journal_only", loop],
                              capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            raise AssertionError(f"e2fsck -E journal_only on {part.name}: {proc.returncode}: "
                                 f"{proc.stdout}{proc.stderr}")
    finally:
        subprocess.run([*sudo(), "losetup", "-d", loop], check=True)


def update_state(disk: Path, data: Partition) -> tuple[str, dict]:
    """The updater's persisted state (/data/nusa-update/state.json): its
    name ("Writing", "Good", ...) and fields."""
    text = ext4_read(disk, data, "/nusa-update/state.json")
    if text is None:
        return "none", {}
    fields = json.loads(text)  # {"state": "Writing", "release": {...}, ...}
    return fields.pop("state"), fields


def update_history(disk: Path, data: Partition) -> dict:
    text = ext4_read(disk, data, "/nusa-update/history.json")
    return json.loads(text) if text else {}


def sparse_copy(src: Path, dst: Path, grow_by: int = 0) -> None:
    subprocess.run(["cp", "--sparse=always", str(src), str(dst)], check=True)
    if grow_by:
        with dst.open("r+b") as f:
            f.truncate(dst.stat().st_size + grow_by)


# --------------------------------------------------------------------------
# The virtual machine


class Appliance:
    """The gateway inside the VM, as nusatest's helpers expect a server."""

    def __init__(self, port: int, ca: Path):
        self.port = port
        self.ca_path = ca
        self.host = "127.0.0.1"
        self._ssl: dict[tuple[str, ...], ssl.SSLContext] = {}

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"https://{self.authority}{path}"

    def ssl_context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        if alpn not in self._ssl:
            ctx = ssl.create_default_context(cafile=str(self.ca_path))
            ctx.set_alpn_protocols(list(alpn))
            self._ssl[alpn] = ctx
        return self._ssl[alpn]


@dataclass
class Vm:
    disk: Path
    workdir: Path
    port: int
    memory_mib: int = 2048
    cpus: int = 2
    proc: subprocess.Popen | None = None
    # Boots so far: every start of QEMU is one (-no-reboot turns a guest's
    # reboot into QEMU's exit; the test starts it again, as the reset).
    boot: int = 0
    started: float = 0.0
    phases: list[tuple[float, str]] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _watcher: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def serial_log(self) -> Path:
        """This boot's console (serial-1.log, serial-2.log, ...)."""
        return self.workdir / f"serial-{max(self.boot, 1)}.log"

    @property
    def phase_log(self) -> Path:
        return self.workdir / "phases.log"

    def command(self) -> list[str]:
        vars_fd = self.workdir / "OVMF_VARS_4M.fd"
        if not vars_fd.exists():
            shutil.copyfile(OVMF_VARS, vars_fd)
        fwd = f"tcp:127.0.0.1:{self.port}-:8443,hostfwd=udp:127.0.0.1:{self.port}-:8443"
        return [
            "qemu-system-x86_64", *accel_args(), "-machine", "q35",
            "-m", str(self.memory_mib), "-smp", str(self.cpus),
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}",
            "-drive", f"if=virtio,format=raw,file={self.disk}",
            "-netdev", f"user,id=n0,hostfwd={fwd}", "-device", "virtio-net-pci,netdev=n0",
            "-serial", f"file:{self.serial_log}", "-display", "none", "-monitor", "none",
            "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
            # A reboot (the updater's, or panic=10 after a failed root
            # mount) ends QEMU: the test sees it at once, can read the disk
            # between boots, and starts the next boot itself (wait_exit,
            # start), instead of a boot loop going on unseen.
            "-no-reboot",
        ]

    def start(self) -> None:
        """Powers on (the next boot: its console goes to serial-<boot>.log)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.boot += 1
        self.serial_log.unlink(missing_ok=True)
        cmd = self.command()
        self.started = 0.0
        self.phase(f"boot {self.boot}: qemu start ({accel()}): " + " ".join(cmd))
        self.started = time.monotonic()
        self.phases = [(0.0, "qemu started")]
        self._seen = set()
        self.proc = subprocess.Popen(cmd, stdout=(self.workdir / f"qemu-{self.boot}.log").open("wb"),
                                     stderr=subprocess.STDOUT)
        # Milestones are timed by polling the console file every 0.2 s.
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while self.alive():
            self.watch_serial()
            time.sleep(0.2)
        self.watch_serial()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self, what: str) -> None:
        with self._lock:
            t = self.elapsed() if self.started else 0.0
            self.phases.append((t, what))
            self.workdir.mkdir(parents=True, exist_ok=True)
            with self.phase_log.open("a") as f:
                f.write(f"boot {self.boot} {t:8.2f}s  {what}\n")

    def serial(self) -> str:
        """The console so far, without terminal escapes (systemd colours its
        status lines)."""
        try:
            text = self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return ANSI_ESCAPE.sub("", text)

    def watch_serial(self) -> None:
        text = self.serial()
        for name, needle in MILESTONES:
            if name not in self._seen and needle in text:
                self._seen.add(name)
                self.phase(f"serial: {name}")

    def wait_serial(self, needle: str, timeout: float, regex: bool = False) -> str:
        """Waits for a line of this boot's console containing needle (or
        matching the regular expression); returns it."""
        pattern = re.compile(needle if regex else re.escape(needle))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.serial().splitlines():
                if pattern.search(line):
                    return line
            if not self.alive():
                break
            time.sleep(0.25)
        for line in self.serial().splitlines():
            if pattern.search(line):
                return line
        state = "running" if self.alive() else f"QEMU exited ({self.proc.returncode if self.proc else '-'})"
        raise AssertionError(f"boot {self.boot}: no {needle!r} on the console within {timeout:.0f} s ({state})")

    def wait_exit(self, timeout: float, why: str = "reboot") -> int:
        """Waits for the guest to reboot or power off (QEMU ends: -no-reboot);
        returns QEMU's exit status."""
        if self.proc is None:
            raise AssertionError("QEMU was never started")
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"boot {self.boot}: no {why} within {timeout:.0f} s "
                                 f"(see {self.serial_log.name})") from None
        self.phase(f"guest ended the boot ({why}; QEMU exit {rc})")
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, appliance: Appliance, timeout: float = 180) -> float:
        """Polls GET /v2/health/ready (CA-verified) until 200; returns the
        seconds from QEMU's start to that answer."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"QEMU exited with {self.proc.returncode} before the "
                                     f"gateway was ready (last: {last})")
            try:
                resp = nt.https1(appliance, "GET", "/v2/health/ready", timeout=5)
                last = f"HTTP {resp.status}"
                if resp.status == 200:
                    t = self.elapsed()
                    self.phase(f"ready: GET /v2/health/ready 200 ({t:.1f} s after QEMU started)")
                    return t
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
        raise AssertionError(f"gateway not ready within {timeout:.0f} s (last: {last})")

    def qmp(self, *commands: str, timeout: float = 10) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.workdir / "qmp.sock"))
            f = s.makefile("rw")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", *commands):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while True:
                    msg = json.loads(f.readline())
                    if "return" in msg or "error" in msg:
                        break

    def shutdown(self, timeout: float | None = None) -> None:
        """ACPI power button, as an operator would press it; waits for QEMU to
        end. Raises when the guest does not power off in time (then kills it)."""
        if not self.alive():
            return
        timeout = timeout or (90 if accel() == "kvm" else 300)
        self.phase("ACPI power button (system_powerdown)")
        try:
            self.qmp("system_powerdown")
            self.proc.wait(timeout=timeout)
            self.phase(f"powered off (QEMU exit {self.proc.returncode})")
        except (OSError, subprocess.TimeoutExpired) as e:
            self.kill()
            raise AssertionError(f"the guest did not power off within {timeout:.0f} s: {e}")

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.phase("QEMU killed")

    def save_artifacts(self, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for f in [self.phase_log, *sorted(self.workdir.glob("serial-*.log")),
                  *sorted(self.workdir.glob("qemu-*.log"))]:
            if f.exists():
                shutil.copyfile(f, dest / f.name)


@contextlib.contextmanager
def in_order(request, subject, artifacts: Path):
    """One test of a story told on one machine (`subject` has `failed_step`
    and `vm`): it starts from the state its predecessor left, so after a
    failure the rest are skipped, and every failure keeps the consoles so
    far under artifacts/<test>/."""
    import pytest

    if subject.failed_step:
        pytest.skip(f"{subject.failed_step} failed; the machine is not where this test starts")
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        subject.failed_step = request.node.name
        subject.vm.save_artifacts(artifacts / request.node.name)

"""A download killed part-way resumes from what is on disk (issue 17, "No
lost work"): `nusactl update download` of a 48 MiB release from a real
HTTP server (Range requests, throttled to about 16 MiB/s), killed with
SIGKILL twice mid-download, then run to the end: every run after a kill
starts past what the earlier ones verified, and the image bytes served in
all are the image once plus at most one checkpoint per kill
(`download_checkpoint_bytes`, 4 MiB here) and what was in flight.
"""
from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import nusatest as nt
import test_release_brake as rb

pytestmark = pytest.mark.timeout(240)

IMAGE_BYTES = 48 << 20
CHECKPOINT = 4 << 20
RATE = 16 << 20          # bytes per second the server sends a file at
IN_FLIGHT = 4 << 20      # sent but unread at a kill: socket buffers, the last block


class Throttled(http.server.SimpleHTTPRequestHandler):
    """Static files with single Range requests, sent at RATE; counts the
    bytes sent per path and records each request's range."""

    sent: dict[str, int] = {}
    ranges: list[tuple[str, int]] = []
    lock = threading.Lock()

    def log_message(self, fmt: str, *args) -> None:
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        start, end = 0, size - 1
        if m is not None:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
        with Throttled.lock:
            Throttled.ranges.append((self.path, start))
        f = path.open("rb")
        f.seek(start)
        self.send_response(206 if m is not None else 200)
        self.send_header("Content-Type", "application/octet-stream")
        if m is not None:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        left = self._left
        block = 256 << 10
        while left > 0:
            data = source.read(min(left, block))
            if not data:
                break
            try:
                outputfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return
            with Throttled.lock:
                Throttled.sent[self.path] = Throttled.sent.get(self.path, 0) + len(data)
            left -= len(data)
            time.sleep(len(data) / RATE)


@pytest.fixture()
def server(tmp_path):
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    keys, repo = fleet_dir / "keys", fleet_dir / "repo"
    rb.ok(["release", "keygen", "--keys", str(keys)])
    rb.ok(["release", "init", "--repo", str(repo), "--keys", str(keys)])
    image = tmp_path / "1.1.0.img"
    image.write_bytes(os.urandom(IMAGE_BYTES))
    rb.ok(["release", "add", "--repo", str(repo), "--keys", str(keys), "--variant", rb.VARIANT,
           "--version", "1.1.0", "--image", str(image)])
    Throttled.sent, Throttled.ranges = {}, []
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: Throttled(*a, directory=str(repo), **kw))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield repo, httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def make_box(root: Path, repo: Path, port: int) -> Path:
    root.mkdir()
    for slot in ("slot-a", "slot-b"):
        with open(root / slot, "wb") as f:
            f.truncate(IMAGE_BYTES + (1 << 20))
    (root / "version").write_text("1.0.0\n")
    (root / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "boot").mkdir()
    config = root / "update.toml"
    config.write_text(nt.toml_dumps({
        "variant": rb.VARIANT,
        "repository": f"http://127.0.0.1:{port}",
        "version_file": str(root / "version"),
        "trusted_root": str(repo / "metadata" / "1.root.json"),
        "state_dir": str(root / "state"),
        "machine_id": str(root / "machine-id"),
        "slots": [str(root / "slot-a"), str(root / "slot-b")],
        "reboot_command": [],
        "metrics_file": str(root / "metrics.prom"),
        "download_checkpoint_bytes": CHECKPOINT,
        "bootloader": {"kind": "file", "dir": str(root / "boot")},
    }))
    return config


def image_path() -> str:
    """The path of the release's image: the largest file served."""
    return max(Throttled.sent, key=lambda p: Throttled.sent[p])


def test_a_killed_download_refetches_at_most_a_checkpoint_per_kill(tmp_path, server):
    repo, port = server
    config = make_box(tmp_path / "box", repo, port)
    cmd = [str(nt.nusactl_binary()), "update", "--config", str(config), "download"]
    # Killed once 14 MiB and once 30 MiB of image bytes were sent in all:
    # mid-piece, and (the first time) in the third checkpoint.
    for kill_at in (14 << 20, 30 << 20):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while max(Throttled.sent.values(), default=0) < kill_at:
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, Throttled.sent
            time.sleep(0.01)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
    seen = len(Throttled.ranges)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "downloaded" in done.stdout, done.stdout + done.stderr
    image = image_path()
    image_starts = [s for path, s in Throttled.ranges if path == image]
    last_run = [s for path, s in Throttled.ranges[seen:] if path == image]
    # Every run after a kill resumed past zero: what verified was recorded.
    assert image_starts.count(0) == 1, image_starts
    assert last_run and min(last_run) > 0, (last_run, image_starts)
    served = Throttled.sent[image]
    kills = 2
    assert served <= IMAGE_BYTES + kills * (CHECKPOINT + IN_FLIGHT), \
        f"{served - IMAGE_BYTES} bytes fetched again over {kills} kills (starts {image_starts})"
    assert served >= IMAGE_BYTES

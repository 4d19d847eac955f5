"""The data partition full (issue 19): the cache stops writing, counts it,
and serving continues; nothing panics.

nusad's data dir (`--data`, where `cache.redb` lives) is on a small
filesystem of its own: a 16 MiB ext4 image on a loop device, as the
appliance's data partition is ext4; where a loop device cannot be set up, a
16 MiB tmpfs (`size=`), which fails writes with the same ENOSPC. Mounting
needs root: without it (or where mounting is refused) the test is skipped
and says why.

After nusad has started (its TLS files and keys written) and the cache's
disk tier is open, the rest of the filesystem is filled with a file. Then
distinct requests (fresh random inputs: every one a miss to store) go in
from four clients: every answer must be 200 and match onnxruntime's, the
disk tier's failed writes must be counted
(`nusa_cache_disk_write_errors_total`) and logged once (not once per
failed batch: at most once a minute), and the log must hold no panic. Then
the filler is removed and serving must go on; whether the tier writes
again is printed, not asserted: after an I/O error redb refuses writes
until the file is reopened, i.e. until nusad restarts (gateway/cache's
README).
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(240)

FS_MIB = 16
REQUESTS = 400
CLIENTS = 4


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


@pytest.fixture
def small_fs(tmp_path):
    """(mount point, kind) of a FS_MIB filesystem mounted for this test."""
    if os.geteuid() != 0:
        why = "mounting a small filesystem needs root"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI runs as root, so this must run there")
        pytest.skip(why)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    kind = None
    image = tmp_path / "data.img"
    if shutil.which("mkfs.ext4"):
        with open(image, "wb") as f:
            f.truncate(FS_MIB << 20)
        if _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image)).returncode == 0 and \
                _run("mount", "-o", "loop", str(image), str(mnt)).returncode == 0:
            kind = "ext4 on a loop device"
    if kind is None:
        r = _run("mount", "-t", "tmpfs", "-o", f"size={FS_MIB}m,mode=0755", "tmpfs", str(mnt))
        if r.returncode != 0:
            why = f"cannot mount a loop ext4 or a tmpfs here: {r.stderr.strip()}"
            if os.environ.get("CI"):
                pytest.fail(f"{why} (CI runs as root, where mounting works)")
            pytest.skip(why)
        kind = "tmpfs"
    try:
        yield mnt, kind
    finally:
        for _ in range(10):
            if _run("umount", str(mnt)).returncode == 0:
                break
            time.sleep(0.5)


def fill(path: Path) -> int:
    """Writes path until the filesystem is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 64 << 10, 4 << 10, 512):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                    written += chunk
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass
    return written


def send_distinct(server: nt.NusadServer, x: np.ndarray, expected: np.ndarray) -> list[str]:
    """Each row once, from CLIENTS threads; returns what was wrong."""
    bad: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(c, len(x), CLIENTS):
            body, headers = nt.infer_request({nt.INPUT: x[i:i + 1]}, outputs=[nt.OUTPUT])
            try:
                r = nt.https1(server, "POST", nt.infer_path(), body, headers)
                nt.assert_infer_ok(r, expected[i:i + 1])
                assert nt.served_by(r) == "local", nt.served_by(r)
            except Exception as e:  # noqa: BLE001: every failure is collected
                with lock:
                    bad.append(f"row {i}: {e!r}"[:300])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return bad


def test_disk_full_cache_stops_writing_and_serving_continues(tmp_path, small_fs):
    import onnxruntime as ort
    mnt, kind = small_fs
    sess = ort.InferenceSession(str(nt.DEMO_MODEL), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(23).standard_normal((2 * REQUESTS, 3, 32, 32), dtype=np.float32)
    expected = sess.run(None, {"input": x})[0]

    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), {
        **nt.batching(max_batch_size=8, max_queue_delay_us=500),
        "cache": {"enabled": True, "ttl_s": 86400}})})
    # A disk budget far above the filesystem: only the full disk stops it.
    config = {"cache": {"memory_bytes": 1 << 20, "disk_bytes": 1 << 30}}
    (tmp_path / "server").mkdir()
    server = nt.NusadServer("disk-full", tmp_path / "server", models, config)
    server.data_dir = mnt / "data"  # the log stays off the small filesystem
    server.start()
    try:
        nt.wait_for_metrics(server, lambda s: nt.select(s, "nusa_cache_bytes", tier="disk"), timeout=10)
        filler = mnt / "filler"
        filled = fill(filler)
        st = os.statvfs(mnt)
        print(f"\n[disk-full] {kind}: filled {filled >> 10} KiB, {st.f_bavail * st.f_frsize} bytes left")

        bad = send_distinct(server, x[:REQUESTS], expected[:REQUESTS])
        assert not bad, f"{len(bad)} requests failed on a full disk: {bad[:5]}"
        assert server.alive(), server.log_tail()

        def counted(s):
            assert nt.metric_sum(s, "nusa_cache_disk_write_errors_total") > 0, \
                "no failed disk-tier write counted (nusa_cache_disk_write_errors_total)"
        samples = nt.wait_for_metrics(server, counted, timeout=15)
        errors_full = nt.metric_sum(samples, "nusa_cache_disk_write_errors_total")
        disk_bytes_full = nt.metric_sum(samples, "nusa_cache_bytes", tier="disk")
        log = server.log_path.read_text("utf-8", "replace")
        assert "cache disk write failed" in log, server.log_tail()
        warnings = log.count("cache disk write failed")
        assert warnings <= 2, f"{warnings} warnings for failed disk writes: one per batch floods the log"

        # Space again: the tier writes again, serving never stopped.
        filler.unlink()
        bad = send_distinct(server, x[REQUESTS:], expected[REQUESTS:])
        assert not bad, f"{len(bad)} requests failed after space came back: {bad[:5]}"
        samples = nt.scrape_metrics(server)
        disk_bytes_after = nt.metric_sum(samples, "nusa_cache_bytes", tier="disk")
        print(f"[disk-full] write errors counted {errors_full:.0f} ({warnings} warnings in the log); "
              f"disk tier bytes {disk_bytes_full:.0f} when full, {disk_bytes_after:.0f} after space "
              f"came back (writing again: {disk_bytes_after > disk_bytes_full}); writes dropped (queue full) "
              f"{nt.metric_sum(samples, 'nusa_cache_disk_writes_dropped_total'):.0f}")
        log = server.log_path.read_text("utf-8", "replace")
        assert "panicked" not in log, log[-5000:]
        assert server.alive(), server.log_tail()
    finally:
        server.stop()

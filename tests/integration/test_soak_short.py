"""The soak test's 2-minute variant (issue 19), in CI: `scripts/soak
--minutes 2` (bench/soak.py) on the nusad the tests use (NUSAD_BIN, or the
debug build), a region and a main nusad under mixed load (cache hits and
misses, spills, bad requests; HTTP/1.1, HTTP/2, HTTP/3) at 70% of the
capacity it measures. It must exit 0: no good request failed, every bad
one got its 4xx, RSS and open fds of both nusads within 5% after warm-up,
requests spilled, no panic. The full run is 30 minutes (`scripts/soak`).
"""
from __future__ import annotations

import os
import subprocess

import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(330)

MINUTES = os.environ.get("NUSA_SOAK_MINUTES", "2")


def test_soak_two_minutes(tmp_path):
    report = tmp_path / "soak.md"
    # NUSAD_BIN set: scripts/soak builds nothing and uses the tests' nusad.
    env = {**os.environ, "ORT_DYLIB_PATH": nt.ort_dylib_path(), "NUSAD_BIN": str(nt.nusad_binary())}
    p = subprocess.run([str(nt.REPO_ROOT / "scripts" / "soak"), "--minutes", MINUTES,
                        "--out", str(report)],
                       cwd=nt.REPO_ROOT, env=env, capture_output=True, text=True, timeout=320)
    text = report.read_text() if report.exists() else "(no report)"
    print(p.stdout[-3000:])
    assert p.returncode == 0, f"soak failed ({p.returncode}):\n{text}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    assert "Result: **PASS**" in text, text
    assert "cloud:soak-region" in text and "'cache':" in text and "'local':" in text, text

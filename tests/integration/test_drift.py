"""Model drift (issue 16): nusad samples what a model receives and answers,
learns a baseline, and compares each window with it by the population
stability index. A client that shifts its inputs makes the index cross the
threshold: the metrics, `nusactl models drift`, the status overview and the
alert's series all say so; unshifted windows stay below 0.1.

Short windows here ([drift] window_s = 2, baseline_s = 3); the defaults are
5 minutes and an hour."""
from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(240)

DRIFT = {"sample_every": 1, "window_s": 2, "baseline_s": 3, "baseline_min_samples": 60,
         "min_window_samples": 20, "threshold": 0.25}


def send(server: nt.NusadServer, rng: np.random.Generator, n: int, shift: float) -> None:
    pool = nt.Https1Pool(server, 1)
    try:
        for _ in range(n):
            x = (rng.standard_normal((1, *nt.INPUT_ROW_SHAPE)) + shift).astype(np.float32)
            body, headers = nt.binary_infer_request(x)
            r = pool.request(0, "POST", nt.infer_path(), body, headers)
            assert r.status == 200, r
    finally:
        pool.close()


def drift(server: nt.NusadServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(nt.nusactl_binary()), "models", "drift", nt.MODEL,
                           "--socket", str(server.admin_socket), *args],
                          capture_output=True, text=True, timeout=30)


def report(server: nt.NusadServer) -> dict:
    r = drift(server, "--json")
    assert r.returncode == 0, r.stderr
    [version] = json.loads(r.stdout)["versions"]
    return version


def tensor(rep: dict, name: str, kind: str) -> dict:
    [t] = [t for t in rep["tensors"] if t["name"] == name and t["kind"] == kind]
    return t


def wait_windows(server, rng, shift, after: int, timeout: float = 40) -> dict:
    """Send requests until `after` more windows have been judged."""
    deadline = time.monotonic() + timeout
    start = report(server)["windows"]
    while True:
        send(server, rng, 25, shift)
        rep = report(server)
        if rep["phase"] == "watching" and rep["windows"] >= start + after:
            t = tensor(rep, nt.INPUT, "input")
            if t["status"] == "judged":
                return rep
        assert time.monotonic() < deadline, rep


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drift")
    # No cache: every request computes (the inputs are all different anyway).
    server = nt.NusadServer("drift", tmp, None, {"drift": DRIFT,
                                                 "cache": {"memory_bytes": 0}}).start()
    yield server
    server.stop_checked("drift")


def test_shifted_inputs_cross_the_threshold_and_every_surface_says_so(box):
    rng = np.random.default_rng(16)
    # The baseline: at least baseline_s and baseline_min_samples.
    send(box, rng, 80, 0.0)
    time.sleep(3.2)
    # Unshifted windows: no drift.
    rep = wait_windows(box, rng, 0.0, after=2)
    t = tensor(rep, nt.INPUT, "input")
    assert t["psi"] < 0.1 and not t["drifted"], t
    assert not any(x["drifted"] for x in rep["tensors"]), rep

    # The client's inputs move by two standard deviations.
    rep = wait_windows(box, rng, 2.0, after=1)
    t = tensor(rep, nt.INPUT, "input")
    assert t["psi"] > DRIFT["threshold"] and t["drifted"], t
    assert t["current_mean"] == pytest.approx(2.0, abs=0.3), t
    assert t["baseline_mean"] == pytest.approx(0.0, abs=0.3), t

    # nusactl's text names the tensor and the verdict.
    text = drift(box)
    assert text.returncode == 0, text.stderr
    assert "DRIFTED" in text.stdout and nt.INPUT in text.stdout, text.stdout

    # The metrics the alert reads.
    samples = nt.scrape_metrics(box)
    assert nt.metric_sum(samples, "nusa_model_drift_drifted", model=nt.MODEL,
                         tensor=nt.INPUT, kind="input") == 1
    assert nt.metric_sum(samples, "nusa_model_drift_psi", model=nt.MODEL,
                         tensor=nt.INPUT, kind="input") > DRIFT["threshold"]
    assert nt.metric_sum(samples, "nusa_model_drift_samples_total", model=nt.MODEL) >= 100

    # The status overview (the page's and `nusactl status`'s data).
    o = nt.admin(box, "GET", "/v2/nusa/status").json()
    [d] = [d for d in o["drift"] if d["model"] == nt.MODEL]
    assert any(x["drifted"] for x in d["tensors"]), d

    # Back to the baseline's inputs: the next judged window is calm again.
    rep = wait_windows(box, rng, 0.0, after=1)
    t = tensor(rep, nt.INPUT, "input")
    assert t["psi"] < 0.1 and not t["drifted"] and t["worst_psi"] > DRIFT["threshold"], t


def test_unknown_model_and_bad_config_are_clear(box, tmp_path):
    r = subprocess.run([str(nt.nusactl_binary()), "models", "drift", "nope",
                        "--socket", str(box.admin_socket)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "unknown model 'nope'" in r.stderr, r.stderr
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[drift]\nsample_every = 0\n")
    out = nt.run_nusad(["--config", str(cfg), "--data", str(tmp_path / "data")])
    assert out.returncode == 64 and "drift.sample_every" in out.stderr, out.stderr

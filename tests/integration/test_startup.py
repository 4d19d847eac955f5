"""Start-up and serving edge cases: a missing ONNX Runtime library, a model
that fails to load beside one that loads, the bundled demo model when no
repository is given, and an oversized request head."""
from __future__ import annotations

import os
import subprocess

import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)


def test_missing_onnxruntime_library_is_a_clear_startup_error(tmp_path):
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), None)})
    env = nt.nusad_env()
    env["ORT_DYLIB_PATH"] = str(tmp_path / "nowhere" / "libonnxruntime.so")
    p = subprocess.run([str(nt.nusad_binary()), "--listen", f"127.0.0.1:{nt.free_port()}",
                        "--models", str(models), "--data", str(tmp_path / "data"),
                        "--metrics-listen", f"127.0.0.1:{nt.free_port()}"],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert "scripts/fetch-onnxruntime" in p.stderr, p.stderr
    assert "nowhere" in p.stderr, "the message names where it looked"


@pytest.fixture(scope="module")
def half_broken_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("nusad-broken")
    models = nt.make_model_repo(work / "models", {nt.MODEL: ((1,), None)})
    bad = models / "broken" / "1"
    bad.mkdir(parents=True)
    (bad / "model.onnx").write_bytes(b"this is not an ONNX model")
    server = nt.NusadServer("broken", work, models)
    # Strict readiness: /v2/health/ready is 503 while a model is broken, so
    # wait for liveness instead.
    server.ready_path = "/v2/health/live"
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_broken_model_is_reported_and_the_others_serve(half_broken_server):
    s = half_broken_server
    assert nt.https1(s, "GET", "/v2/health/ready").status == 503
    r = nt.https1(s, "GET", "/v2/models/broken/ready")
    assert r.status == 503 or r.json().get("ready") is False, r
    nt.assert_error(nt.https1(s, "POST", nt.infer_path("broken"), b"{}"), 503, ["broken"])
    index = nt.admin(s, "POST", "/v2/repository/index").json()
    states = {m["name"]: m["state"] for m in index}
    assert states == {"broken": "UNAVAILABLE", nt.MODEL: "READY"}, index
    assert any("broken" == m["name"] and m["reason"] for m in index), "the reason is given"
    nt.good_infer_http1(s)


def test_without_a_repository_the_bundled_demo_model_serves(tmp_path):
    server = nt.NusadServer("demo", tmp_path, models_dir=None)
    server.start()
    try:
        meta = nt.https1(server, "GET", f"/v2/models/{nt.MODEL}").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
        nt.good_infer_http1(server)
    finally:
        server.stop()


def test_oversized_request_head_gets_431_and_the_server_keeps_serving(server):
    r = nt.https1(server, "GET", "/v2/health/ready", headers={"X-Big": "a" * 40_000})
    assert r.status == 431, r
    nt.good_infer_http1(server)

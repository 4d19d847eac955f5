"""The TensorRT engine end to end through nusad, without a GPU: trt-sys's test
double of our C ABI (host memory as "device", y = 2x + 1 as the "model") is
loaded as shim, libnvinfer and libcudart through NUSA_TRT_*, so engine
selection, plan loading and a batch run the real code paths. Also the `auto`
fallback to ONNX Runtime, and `engine = "tensorrt"` where TensorRT is absent."""
from __future__ import annotations

import json

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)

PLAN = b"NUSAPLAN1\ninput x FLOAT -1 4\noutput y FLOAT -1 4\nprofile 1 4 8\n"


def double_library() -> str:
    # The build script leaves the double in trt-sys's OUT_DIR; the newest one
    # is from the build nusad came from.
    found = sorted((nt.REPO_ROOT / "target" / "debug" / "build").glob("trt-sys-*/out/libnusa_trt_double.so"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError("libnusa_trt_double.so not built: run `cargo build`")
    return str(found[-1])


def server_with(tmp_path, env_extra: dict[str, str]) -> nt.NusadServer:
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), None)})
    doubled = models / "doubled"
    (doubled / "1").mkdir(parents=True)
    (doubled / "1" / "model.plan").write_bytes(PLAN)
    (doubled / "config.toml").write_text('engine = "tensorrt"\n')
    server = nt.NusadServer("trt", tmp_path, models)
    server.ready_path = "/v2/health/live"
    original = nt.nusad_env

    def env() -> dict[str, str]:
        e = original()
        e.update(env_extra)
        return e

    nt.nusad_env = env
    try:
        server.start()
    finally:
        nt.nusad_env = original
    return server


def test_a_plan_runs_through_the_tensorrt_engine_and_onnx_models_fall_back(tmp_path):
    lib = double_library()
    env = {v: lib for v in ("NUSA_TRT_SHIM", "NUSA_TRT_NVINFER", "NUSA_TRT_ONNX_PARSER", "NUSA_TRT_CUDART")}
    s = server_with(tmp_path, env)
    try:
        meta = nt.https1(s, "GET", "/v2/models/doubled")
        assert meta.status == 200, meta
        m = meta.json()
        assert m["platform"] == "tensorrt_plan"
        assert m["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]

        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        body = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                       "data": x.flatten().tolist()}]}).encode()
        r = nt.https1(s, "POST", "/v2/models/doubled/infer", body, {"content-type": "application/json"})
        assert r.status == 200, r
        out = r.json()["outputs"][0]
        assert out["name"] == "y" and out["shape"] == [2, 4]
        np.testing.assert_array_equal(np.array(out["data"], dtype=np.float32), (2 * x + 1).flatten())

        # The ONNX model has no plan: auto keeps it on ONNX Runtime.
        nt.good_infer_http1(s)
        log = s.log_tail()
        assert "engine selected" in log and "no version has model.plan" in log, log
    finally:
        s.stop()


def test_without_tensorrt_auto_falls_back_and_tensorrt_models_say_why(tmp_path):
    s = server_with(tmp_path, {"NUSA_TRT_NVINFER": str(tmp_path / "nowhere" / "libnvinfer.so.10")})
    try:
        nt.good_infer_http1(s)
        r = nt.https1(s, "GET", "/v2/models/doubled/ready")
        assert r.status != 200, r
        log = s.log_tail()
        assert "TensorRT is not available" in log and "nowhere" in log, log
    finally:
        s.stop()

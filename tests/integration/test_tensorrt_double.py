"""The TensorRT engine end to end through nusad, without a GPU: trt-sys's test
double of our C ABI is loaded as shim, libnvinfer and libcudart through
NUSA_TRT_*, so engine selection, plan building and caching, the move from
ONNX Runtime to TensorRT and batch runs take the real code paths. The
double's "GPU" is host memory; its builder wraps the ONNX model into a plan
and its executor runs that model with ONNX Runtime, so answers are checked
against the golden outputs. Also the `auto` fallback to ONNX Runtime, and
`engine = "tensorrt"` where TensorRT is absent."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)

PLAN = b"NUSAPLAN1\ninput x FLOAT -1 4\noutput y FLOAT -1 4\nprofile 1 4 8\n"


def double_library() -> str:
    # The build script leaves the double in trt-sys's OUT_DIR; the newest one
    # is from the build nusad came from (its profile folder, else the debug
    # one under CARGO_TARGET_DIR).
    folders = dict.fromkeys([nt.nusad_binary().parent / "build", nt.cargo_build_dir() / "build"])
    found = sorted((lib for folder in folders for lib in folder.glob("trt-sys-*/out/libnusa_trt_double.so")),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"libnusa_trt_double.so not built under {' or '.join(map(str, folders))}: "
                           "run `cargo build`")
    return str(found[-1])


def server_with(tmp_path, env_extra: dict[str, str]) -> nt.NusadServer:
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), None)})
    doubled = models / "doubled"
    (doubled / "1").mkdir(parents=True, exist_ok=True)
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


def double_env(build_ms: int = 0) -> dict[str, str]:
    lib = double_library()
    env = {v: lib for v in ("NUSA_TRT_SHIM", "NUSA_TRT_NVINFER", "NUSA_TRT_ONNX_PARSER", "NUSA_TRT_CUDART")}
    env["NUSA_TRT_DOUBLE_BUILD_MS"] = str(build_ms)
    return env


def infer_tiny_cnn(s: nt.NusadServer) -> str:
    """One golden tiny-cnn request; returns the engine that answered."""
    x, expected = nt.golden_rows([0, 1, 2])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    # no-cache: the answer must come from an engine, not the edge cache.
    headers = {**headers, "cache-control": "no-cache"}
    r = nt.https1(s, "POST", nt.infer_path(), body, headers)
    nt.assert_infer_ok(r, expected)
    assert r.headers.get("nusa-served-by") == "local", r
    return r.headers["nusa-engine"]


def engine_series(s: nt.NusadServer) -> dict[tuple[str, str], float]:
    return {(m.labels["engine"], m.labels["reason"]): m.value
            for m in nt.select(nt.scrape_metrics(s), "nusa_model_engine", model=nt.MODEL)}


def test_a_plan_runs_through_the_tensorrt_engine(tmp_path):
    s = server_with(tmp_path, double_env())
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

        log = s.log_tail()
        assert "engine selected" in log, log
    finally:
        s.stop()


def test_onnx_is_served_on_the_cpu_while_its_plan_builds_then_on_tensorrt(tmp_path):
    """auto + TensorRT present + only model.onnx: ONNX Runtime answers at
    once, the plan builds in the background (3 s here), then the same
    model answers from TensorRT with the golden outputs; a restart loads the
    cached plan without building; a torn plan is rebuilt."""
    s = server_with(tmp_path, double_env(build_ms=3000))
    try:
        assert infer_tiny_cnn(s) == "onnxruntime"
        assert engine_series(s) == {("onnxruntime", "building"): 1.0}
        index = nt.admin(s, "POST", "/v2/repository/index", b"{}").json()
        entry = next(m for m in index if m["name"] == nt.MODEL)
        assert entry["state"] == "READY" and "builds" in entry["reason"], entry
        deadline = time.monotonic() + 60
        while infer_tiny_cnn(s) != "tensorrt":
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.2)
        assert engine_series(s) == {("tensorrt", "auto_plan"): 1.0}
        log = s.log_tail()
        assert "building TensorRT plan" in log and "now runs on TensorRT" in log, log
        assert "timing_cache=false" in log, log
    finally:
        s.stop()
    plans = sorted((s.data_dir / "plans").rglob("*.plan"))
    assert [p.relative_to(s.data_dir / "plans").parts[:2] for p in plans] == [(nt.MODEL, "1")], plans
    assert list((s.data_dir / "plans").glob("timing-*.cache")), "a timing cache was kept"

    # Restart: the cached plan loads at start, nothing is built.
    s.log_path.unlink()
    s = server_with(tmp_path, double_env(build_ms=3000))
    try:
        assert infer_tiny_cnn(s) == "tensorrt"
        assert "building TensorRT plan" not in s.log_tail()
    finally:
        s.stop()

    # A torn plan (a power cut while some other tool wrote it): removed,
    # served from ONNX Runtime, rebuilt with the kept timing cache.
    plans[0].write_bytes(plans[0].read_bytes()[:100])
    s.log_path.unlink()
    s = server_with(tmp_path, double_env(build_ms=0))
    try:
        deadline = time.monotonic() + 60
        while infer_tiny_cnn(s) != "tensorrt":
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.2)
        log = s.log_tail()
        assert "cached TensorRT plan does not load" in log and "timing_cache=true" in log, log
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


def test_a_versions_goldens_run_on_onnx_runtime_and_again_on_the_built_plan(tmp_path):
    """tiny-cnn version 1 carries a golden request (tests/basic.json): it is
    run when the version loads on ONNX Runtime, and again on the TensorRT
    plan built here (the double; FP16 tolerance) before the plan takes the
    traffic. Both pass, and the model moves to TensorRT as before."""
    x, expected = nt.golden_rows([0, 1])
    tensor = lambda name, a: {"name": name, "datatype": "FP32", "shape": list(a.shape),  # noqa: E731
                              "data": a.reshape(-1).tolist()}
    golden = {"request": {"inputs": [tensor(nt.INPUT, x)]},
              "expected": {"model_name": nt.MODEL, "outputs": [tensor(nt.OUTPUT, expected)]},
              "tolerance": {"atol": 1e-4, "rtol": 1e-4}}
    tests = tmp_path / "models" / nt.MODEL / "1" / "tests"
    tests.mkdir(parents=True)
    (tests / "basic.json").write_text(json.dumps(golden))
    s = server_with(tmp_path, double_env(build_ms=1000))
    try:
        assert infer_tiny_cnn(s) == "onnxruntime"
        deadline = time.monotonic() + 60
        while infer_tiny_cnn(s) != "tensorrt":
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.2)
        log = s.log_tail()
        assert "golden tests passed" in log, log
        assert "golden tests passed on the TensorRT plan" in log, log
        assert "golden test failed" not in log, log
    finally:
        s.stop()

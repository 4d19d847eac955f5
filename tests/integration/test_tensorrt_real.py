"""The demo model on real TensorRT, through nusad: runs only from
scripts/check-tensorrt on a Jetson or RTX box with TensorRT installed (it
sets NUSA_TENSORRT_PLAN to the plan trtexec built); skipped everywhere else.
Outputs are compared with the onnxruntime goldens within FP16 tolerance."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.environ.get("NUSA_TENSORRT_PLAN"),
                       reason="needs TensorRT and a GPU: run scripts/check-tensorrt"),
]

FP16_ATOL = 2e-2


def test_tiny_cnn_plan_matches_the_goldens(tmp_path):
    plan = Path(os.environ["NUSA_TENSORRT_PLAN"])
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), {"engine": "tensorrt"})})
    (models / nt.MODEL / "1" / "model.plan").write_bytes(plan.read_bytes())
    s = nt.NusadServer("trt-real", tmp_path, models).start()
    try:
        meta = nt.https1(s, "GET", f"/v2/models/{nt.MODEL}").json()
        assert meta["platform"] == "tensorrt_plan", meta
        # Every golden row, alone and in batches within the profile (1..16).
        for rows in ([0], [0, 1, 2, 3], list(range(8))):
            x, expected = nt.golden_rows(rows)
            body, headers = nt.binary_infer_request(x)
            r = nt.https1(s, "POST", nt.infer_path(), body, headers)
            assert r.status == 200, r
            _, outputs = nt.decode_infer_response(r)
            got = outputs[nt.OUTPUT]
            assert got.shape == expected.shape
            worst = float(np.max(np.abs(got - expected)))
            print(f"rows={len(rows)}: max abs diff from onnxruntime {worst:g}")
            assert worst <= FP16_ATOL, f"max abs diff {worst:g} above FP16 tolerance {FP16_ATOL}"
    finally:
        s.stop()


def test_tiny_cnn_built_on_the_device_matches_the_goldens(tmp_path):
    """Only model.onnx: nusad serves from ONNX Runtime, builds the plan with
    the real shim's builder path (ONNX parser, derived batch profile, timing
    cache), then answers from TensorRT."""
    import time
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), {"engine": "tensorrt"})})
    s = nt.NusadServer("trt-build", tmp_path, models).start()
    try:
        x, expected = nt.golden_rows(list(range(8)))
        body, headers = nt.binary_infer_request(x)
        headers = {**headers, "cache-control": "no-cache"}
        deadline = time.monotonic() + 240
        while True:
            r = nt.https1(s, "POST", nt.infer_path(), body, headers)
            assert r.status == 200, r
            if r.headers.get("nusa-engine") == "tensorrt":
                break
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(1)
        _, outputs = nt.decode_infer_response(r)
        worst = float(np.max(np.abs(outputs[nt.OUTPUT] - expected)))
        print(f"built on the device: max abs diff from onnxruntime {worst:g}")
        assert worst <= FP16_ATOL
        print("\n".join(l for l in s.log_tail().splitlines() if "TensorRT plan" in l))
    finally:
        s.stop()

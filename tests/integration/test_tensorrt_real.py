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

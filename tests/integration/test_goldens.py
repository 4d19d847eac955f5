"""Golden requests shipped with a model version (`tests/*.json`, issue 13):
`nusactl models publish` refuses a version whose goldens fail on ONNX
Runtime, and nusad refuses to let a loaded version take traffic when its
goldens fail there (the old version keeps serving)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt
from test_model_lifecycle import MODEL, WEIGHTS, check_answer, infer_body, make_server, matmul_model

pytestmark = pytest.mark.timeout(180)


def golden(x: np.ndarray, y: np.ndarray, atol: float = 1e-5) -> str:
    tensor = lambda name, a: {"name": name, "datatype": "FP32", "shape": list(a.shape),  # noqa: E731
                              "data": a.reshape(-1).tolist()}
    return json.dumps({"request": {"inputs": [tensor("x", x)]},
                       "expected": {"model_name": MODEL, "outputs": [tensor("y", y)]},
                       "tolerance": {"atol": atol, "rtol": 0}})


def version_dir(root: Path, weights: np.ndarray, expect: np.ndarray | None = None) -> Path:
    """A version folder whose golden expects x @ expect (default: its own weights)."""
    root.mkdir(parents=True)
    (root / "model.onnx").write_bytes(matmul_model(weights))
    (root / "tests").mkdir()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (root / "tests" / "basic.json").write_text(golden(x, x @ (weights if expect is None else expect)))
    return root


def nusactl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(nt.nusactl_binary()), "models", *args], capture_output=True,
                          text=True, timeout=120, env=nt.nusad_env())


def test_publish_runs_the_goldens_on_onnx_runtime(tmp_path):
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    assert nusactl("init", "--repo", str(repo), "--keys", str(keys)).returncode == 0
    common = ["--repo", str(repo), "--keys", str(keys), "--model", MODEL,
              "--source-revision", "r", "--training-run", "t", "--publisher", "p"]
    good = version_dir(tmp_path / "good", WEIGHTS[1])
    r = nusactl("publish", *common, "--version", "1", "--dir", str(good))
    assert r.returncode == 0, r.stderr
    assert "1 golden test(s) passed on ONNX Runtime" in r.stderr

    # Weights that do not give what the goldens expect: not published.
    bad = version_dir(tmp_path / "bad", WEIGHTS[2], expect=WEIGHTS[1])
    r = nusactl("publish", *common, "--version", "2", "--dir", str(bad))
    assert r.returncode != 0
    assert "golden tests do not pass" in r.stderr and "tests/basic.json: output 'y': element" in r.stderr, r.stderr
    signed = "".join(p.read_text() for p in (repo / "metadata").glob("*.json"))
    assert f"models/{MODEL}/1/" in signed and f"models/{MODEL}/2/" not in signed


def test_a_loaded_version_whose_goldens_fail_never_takes_traffic(tmp_path):
    s = make_server(tmp_path)
    try:
        x = np.ones((1, 4), dtype=np.float32)
        # Version 2 with goldens that its weights do not meet.
        version_dir(s.models_dir / MODEL / "2", WEIGHTS[2], expect=WEIGHTS[1])
        r = nt.admin(s, "POST", f"/v2/repository/models/{MODEL}/load")
        nt.assert_error(r, 400, ["version 2", "golden test failed", "tests/basic.json"])
        assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "old") == 1
        # Goldens that pass: version 2 is swapped in.
        (s.models_dir / MODEL / "2" / "tests" / "basic.json").write_text(
            golden(x, x @ WEIGHTS[2]))
        assert nt.admin(s, "POST", f"/v2/repository/models/{MODEL}/load").status == 200
        assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "new") == 2
    finally:
        s.stop_checked()

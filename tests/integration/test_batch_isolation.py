"""One request must never fail the batch it is in (issue 19, probe finding 1).

Two models made here with the onnx package, served by nusad on ONNX Runtime
with a 100 ms batching window so that requests released together share a
batch:

- `text`: a BYTES Identity. An element with a NUL byte (JSON `\\u0000`) or
  invalid UTF-8 (binary tensor extension) used to pass validation, be batched,
  and make ONNX Runtime refuse the whole batch: every request in it got 500
  "engine failed". Such elements are now refused before queueing with a 400
  naming the tensor and the element; the others of the batch are answered.
- `lookup`: a Gather over a fixed table. An index out of range cannot be
  checked before the engine runs (only the kernel knows), so the batch fails
  on the engine; it is then run apart (halved until each failing request is
  alone) and only the bad requests fail, with ONNX Runtime's INVALID_ARGUMENT
  as a 400.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nusatest as nt

pytestmark = pytest.mark.timeout(180)

TEXT, LOOKUP = "text", "lookup"
TABLE = (np.arange(40, dtype=np.float32).reshape(10, 4) * 0.5 - 3.0)
WINDOW_US = 100_000


def save(model: onnx.ModelProto, path: Path) -> None:
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_text(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])], TEXT,
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 2])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch", 2])])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def build_lookup(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["row"], axis=0)], LOOKUP,
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, ["batch", 1, 4])],
        [numpy_helper.from_array(TABLE, "table")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    work = tmp_path_factory.mktemp("nusad-isolation")
    models = work / "models"
    build_text(models / TEXT / "1" / "model.onnx")
    build_lookup(models / LOOKUP / "1" / "model.onnx")
    for name in (TEXT, LOOKUP):
        (models / name / "config.toml").write_text(nt.toml_dumps(
            nt.batching(max_batch_size=32, max_queue_delay_us=WINDOW_US)))
    s = nt.NusadServer("isolation", work, models).start()
    try:
        yield s
    finally:
        s.stop_checked()


def text_json(rows: list[list[str]]) -> tuple[bytes, dict[str, str]]:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(rows), 2],
                        "data": [s for r in rows for s in r]}]}
    return json.dumps(body).encode(), dict(nt.JSON_HEADERS)


def text_binary(rows: list[list[bytes]]) -> tuple[bytes, dict[str, str]]:
    raw = b"".join(struct.pack("<I", len(e)) + e for r in rows for e in r)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(rows), 2],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def lookup_json(idx: list[int]) -> tuple[bytes, dict[str, str]]:
    body = {"inputs": [{"name": "idx", "datatype": "INT64", "shape": [len(idx), 1], "data": idx}]}
    return json.dumps(body).encode(), dict(nt.JSON_HEADERS)


def echoed(resp: nt.Response) -> list[str]:
    assert resp.status == 200, f"{resp}"
    (out,) = resp.json()["outputs"]
    assert out["name"] == "echo" and out["datatype"] == "BYTES"
    return out["data"]


def batches(server: nt.NusadServer, model: str) -> tuple[float, float]:
    """(batches run, isolation runs) so far for a model."""
    s = nt.scrape_metrics(server)
    return (nt.metric_sum(s, "nusa_batch_size_count", model=model),
            nt.metric_sum(s, "nusa_batch_isolation_runs_total", model=model))


def test_bad_bytes_elements_fail_alone_with_400(server):
    good = [[f"r{i}", f"héllo {i}"] for i in range(10)]
    bodies = [text_json([r]) for r in good]
    bodies.insert(3, text_json([["fine", "nul\u0000inside"]]))
    bodies.insert(8, text_binary([[b"ok", b"ok"], [b"caf\xe9", b"x"]]))
    runs_before, _ = batches(server, TEXT)
    replies = nt.fire_at_once(server, bodies, nt.infer_path(TEXT))

    nt.assert_error(replies[3], 400, ["'text'", "element 1 [0, 1]", "NUL"])
    nt.assert_error(replies[8], 400, ["'text'", "element 2 [1, 0]", "UTF-8"])
    good_replies = [r for i, r in enumerate(replies) if i not in (3, 8)]
    for row, r in zip(good, good_replies):
        assert echoed(r) == row
    # The ten good ones were batched (fewer batches than requests); the two
    # bad ones never reached the engine.
    runs, _ = batches(server, TEXT)
    assert 1 <= runs - runs_before < 10, f"{runs - runs_before} batches for 10 requests"

    # Alone, the same request is the same 400 (it was a 500 before), and the
    # server goes on serving.
    nt.assert_error(nt.https1(server, "POST", nt.infer_path(TEXT), *text_json([["a", "\u0000"]])),
                    400, ["element 1", "NUL"])
    assert echoed(nt.https1(server, "POST", nt.infer_path(TEXT), *text_json([["a", "b"]]))) == ["a", "b"]


def test_a_request_the_engine_refuses_fails_alone_and_its_batch_is_answered(server):
    good = [[i % 10] for i in range(10)] + [[1, 2, 3]]
    bad = {4: [99], 9: [2, -50]}
    bodies = [lookup_json(g) for g in good]
    for at, idx in sorted(bad.items()):
        bodies.insert(at, lookup_json(idx))
    runs_before, iso_before = batches(server, LOOKUP)
    replies = nt.fire_at_once(server, bodies, nt.infer_path(LOOKUP))

    for at in bad:
        nt.assert_error(replies[at], 400, [("indices", "out of", "bounds")])
    good_replies = [r for i, r in enumerate(replies) if i not in bad]
    for idx, r in zip(good, good_replies):
        _, arrays = nt.decode_infer_response(r)
        np.testing.assert_array_equal(arrays["row"], TABLE[idx][:, None, :])
    runs, iso = batches(server, LOOKUP)
    # The bad requests really were in a batch with good ones, which failed on
    # the engine and was run apart: without isolation every reply above
    # would be a 500.
    assert iso - iso_before >= 2, f"isolation runs {iso - iso_before}"
    assert runs - runs_before < len(bodies), f"{runs - runs_before} batches for {len(bodies)} requests"

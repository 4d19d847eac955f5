"""Every datatype of the protocol that ONNX Runtime supports, end to end:
a model made here with one Identity per datatype, served by nusad, called
with JSON tensors (curl-free, raw HTTP/1.1) and with tritonclient's binary
tensors. The answers must be the inputs, bit for bit (FP16 via JSON: the
nearest half).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper

import nusatest as nt

pytestmark = pytest.mark.timeout(120)

# protocol datatype -> (ONNX element type, numpy dtype, two rows of values)
TYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_, [[True, False], [False, True]]),
    "UINT8": (TensorProto.UINT8, np.uint8, [[0, 255], [7, 8]]),
    "UINT16": (TensorProto.UINT16, np.uint16, [[0, 65535], [1, 2]]),
    "UINT32": (TensorProto.UINT32, np.uint32, [[0, 4294967295], [3, 4]]),
    "UINT64": (TensorProto.UINT64, np.uint64, [[0, 18446744073709551615], [5, 6]]),
    "INT8": (TensorProto.INT8, np.int8, [[-128, 127], [-1, 1]]),
    "INT16": (TensorProto.INT16, np.int16, [[-32768, 32767], [-2, 2]]),
    "INT32": (TensorProto.INT32, np.int32, [[-2147483648, 2147483647], [-3, 3]]),
    "INT64": (TensorProto.INT64, np.int64, [[-9223372036854775808, 9223372036854775807], [-4, 4]]),
    "FP16": (TensorProto.FLOAT16, np.float16, [[1.5, -0.25], [65504.0, 0.0]]),
    "FP32": (TensorProto.FLOAT, np.float32, [[1.5, -3.25e-8], [3.0e38, 0.1]]),
    "FP64": (TensorProto.DOUBLE, np.float64, [[1.5, -3.25e-300], [1.0e300, 0.1]]),
    "BYTES": (TensorProto.STRING, np.object_, [["a", ""], ["nusa", "héllo"]]),
}
MODEL = "dtypes"


def build_model(path: Path) -> None:
    nodes, inputs, outputs = [], [], []
    for dt, (onnx_type, _, _) in TYPES.items():
        inputs.append(helper.make_tensor_value_info(f"in_{dt}", onnx_type, ["batch", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{dt}", onnx_type, ["batch", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{dt}"], [f"out_{dt}"]))
    graph = helper.make_graph(nodes, MODEL, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def dtype_server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    work = tmp_path_factory.mktemp("nusad-dtypes")
    models = work / "models"
    build_model(models / MODEL / "1" / "model.onnx")
    (models / MODEL / "config.toml").write_text(nt.toml_dumps(nt.batching(max_batch_size=8, max_queue_delay_us=0)))
    server = nt.NusadServer("dtypes", work, models).start()
    try:
        yield server
    finally:
        server.stop()


def expected(dt: str) -> np.ndarray:
    _, np_type, rows = TYPES[dt]
    if dt == "BYTES":
        return np.array([[v.encode() for v in r] for r in rows], dtype=np.object_)
    return np.array(rows, dtype=np_type)


def test_metadata_lists_every_datatype(dtype_server):
    meta = nt.https1(dtype_server, "GET", f"/v2/models/{MODEL}").json()
    got = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert got == {f"in_{dt}": (dt, [-1, 2]) for dt in TYPES}


def test_json_tensors_of_every_datatype(dtype_server):
    req = {"inputs": [{"name": f"in_{dt}", "shape": [2, 2], "datatype": dt, "data": rows}
                      for dt, (_, _, rows) in TYPES.items()]}
    r = nt.https1(dtype_server, "POST", f"/v2/models/{MODEL}/infer", json.dumps(req).encode(), nt.JSON_HEADERS)
    assert r.status == 200, r
    outs = {o["name"]: o for o in r.json()["outputs"]}
    for dt, (_, np_type, rows) in TYPES.items():
        o = outs[f"out_{dt}"]
        assert o["datatype"] == dt and o["shape"] == [2, 2], o
        if dt == "BYTES":
            assert o["data"] == [v for row in rows for v in row]
        else:
            got = np.array(o["data"], dtype=np_type)
            np.testing.assert_array_equal(got, np.array(rows, dtype=np_type).reshape(-1), err_msg=dt)


def test_binary_tensors_of_every_datatype_with_tritonclient(dtype_server):
    client = httpclient.InferenceServerClient(dtype_server.authority, ssl=True,
                                              ssl_options={"ca_certs": str(dtype_server.ca_path)})
    try:
        inputs, outputs = [], []
        for dt in TYPES:
            x = expected(dt)
            i = httpclient.InferInput(f"in_{dt}", list(x.shape), dt)
            i.set_data_from_numpy(x, binary_data=True)
            inputs.append(i)
            outputs.append(httpclient.InferRequestedOutput(f"out_{dt}", binary_data=True))
        result = client.infer(MODEL, inputs, outputs=outputs)
        for dt in TYPES:
            got, want = result.as_numpy(f"out_{dt}"), expected(dt)
            assert got.shape == want.shape, dt
            if dt == "BYTES":
                assert got.tolist() == want.tolist()
            else:
                np.testing.assert_array_equal(got, want, err_msg=dt)
    finally:
        client.close()


def test_json_value_out_of_range_names_the_tensor(dtype_server):
    req = {"inputs": [{"name": f"in_{dt}", "shape": [1, 2], "datatype": dt,
                       "data": [256, 0] if dt == "UINT8" else rows[0]}
                      for dt, (_, _, rows) in TYPES.items()]}
    r = nt.https1(dtype_server, "POST", f"/v2/models/{MODEL}/infer", json.dumps(req).encode(), nt.JSON_HEADERS)
    nt.assert_error(r, 400, ["in_UINT8", "UINT8", "256"])

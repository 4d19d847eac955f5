"""Bad requests get the right status and a JSON error naming the problem; the
server keeps serving afterwards. Sent over HTTP/1.1 + TLS with http.client for
full control over headers and body."""
from __future__ import annotations

import dataclasses
import json
from typing import Callable

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)

Request = tuple[str, bytes, dict]  # path, body, headers


def json_request(x: np.ndarray | None = None, **kw) -> Request:
    x = nt.golden_rows([0])[0] if x is None else x
    return nt.infer_path(), nt.json_infer_body(x, **kw), nt.JSON_HEADERS


def binary_request(**kw) -> Request:
    body, headers = nt.binary_infer_request(nt.golden_rows([0])[0], **kw)
    return nt.infer_path(), body, headers


def with_header_length(value: Callable[[bytes, str], str]) -> Request:
    """A good binary request whose Inference-Header-Content-Length is replaced."""
    path, body, headers = binary_request()
    key = "Inference-Header-Content-Length"
    headers[key] = value(body, headers[key])
    return path, body, headers


def truncated_binary() -> Request:
    path, body, headers = binary_request()
    return path, body[:-5000], headers  # 12288-byte tensor, 7288 bytes sent


def bare_json(obj) -> Request:
    return nt.infer_path(), json.dumps(obj).encode(), nt.JSON_HEADERS


ROW = nt.golden_rows([0])[0]


@dataclasses.dataclass
class Case:
    id: str
    status: int
    request: Callable[[], Request]
    mentions: list = dataclasses.field(default_factory=list)  # see nt.assert_error
    server: str = "server"  # fixture name


CASES = [
    Case("malformed-json", 400,
         lambda: (nt.infer_path(), b'{"inputs": [{"name": "input", "shape": [1,', nt.JSON_HEADERS),
         [("json", "parse", "expected", "eof", "line")]),
    Case("wrong-datatype", 400,
         lambda: json_request(np.ones((1, 3, 32, 32), dtype=np.int32), datatype="INT32"),
         ["input", "FP32"]),
    Case("wrong-shape", 400,
         lambda: json_request(np.zeros((1, 3, 32, 31), dtype=np.float32)),
         ["input"]),
    Case("data-length-not-matching-shape", 400,
         lambda: bare_json({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                        "data": ROW.reshape(-1)[:-1].tolist()}]}),
         ["input"]),
    Case("missing-input", 400, lambda: bare_json({"inputs": []}), ["input"]),
    Case("wrong-input-name", 400, lambda: json_request(name="image"), ["image"]),
    Case("unknown-model", 404,
         lambda: (nt.infer_path("no-such-model"), json_request()[1], nt.JSON_HEADERS),
         ["no-such-model"]),
    Case("unknown-version", 404,
         lambda: (nt.infer_path(version=2), json_request()[1], nt.JSON_HEADERS),
         [("version", "2")]),
    Case("body-too-large", 413,
         lambda: (nt.infer_path(), b"{" + b" " * (100 * 1024 - 2) + b"}", nt.JSON_HEADERS),
         server="small_body_server"),
    Case("truncated-binary", 400, truncated_binary, [("input", "binary")]),
    Case("binary-size-disagrees-with-shape", 400,
         lambda: binary_request(binary_data_size=8192, payload=ROW.tobytes()[:8192]),
         [("input", "binary_data_size")]),
    Case("header-length-past-end", 400,
         lambda: with_header_length(lambda body, _: str(len(body) + 100)),
         [("inference-header-content-length", "header")]),
    Case("unknown-output", 400,
         lambda: json_request(outputs=[{"name": "logits"}]), ["logits"]),
    Case("non-numeric-header-length", 400,
         lambda: with_header_length(lambda _body, _v: "twelve"),
         ["inference-header-content-length"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request(request, case: Case):
    srv: nt.NusadServer = request.getfixturevalue(case.server)
    path, body, headers = case.request()
    r = nt.https1(srv, "POST", path, body, headers)
    nt.assert_error(r, case.status, case.mentions)
    nt.good_infer_http1(srv)


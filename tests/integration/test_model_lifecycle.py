"""Model lifecycle on one box (issue 13): the model repository API on the
admin listener only, hot swaps under load with zero failed requests,
broken versions refused while the old one serves, pins kept across a
restart, and `nusactl models` over the admin socket with its uid check.

The model `swap` is made here: y = x @ W with a 4x4 weight, W_A in version 1
and W_B in version 2, so every answer says by its numbers which weights
computed it; its `model_version` must agree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import InferenceServerException

import h3client
import nusatest as nt

pytestmark = pytest.mark.timeout(300)

MODEL = "swap"
WEIGHTS = {
    1: np.arange(16, dtype=np.float32).reshape(4, 4) / 8.0,
    2: -np.eye(4, dtype=np.float32) * 3.0 + 0.5,
}
SWAPS = 50


def matmul_model(w: np.ndarray) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def doubled_rows_model() -> bytes:
    """Loads fine, but answers 2 rows per row (Concat): its warm-up fails."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=0)], MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def put_version(models: Path, version: int, data: bytes) -> None:
    vdir = models / MODEL / str(version)
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.onnx").write_bytes(data)


def make_server(tmp: Path, name: str = "lifecycle") -> nt.NusadServer:
    models = tmp / "models"
    put_version(models, 1, matmul_model(WEIGHTS[1]))
    config = nt.batching(max_batch_size=16, max_queue_delay_us=2000)
    config["versions"] = "latest"
    config["cache"] = {"enabled": True, "ttl_s": 3600}
    (models / MODEL / "config.toml").write_text(nt.toml_dumps(config))
    return nt.NusadServer(name, tmp, models).start()


@pytest.fixture
def server(tmp_path):
    s = make_server(tmp_path)
    try:
        yield s
    finally:
        s.stop_checked()


def admin_triton(s: nt.NusadServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(
        url=s.admin_authority, ssl=True, ssl_options={"ca_certs": str(s.ca_path)},
        insecure=False, connection_timeout=30, network_timeout=120)


def auth(s: nt.NusadServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {s.admin_token}"}


def nusactl(s: nt.NusadServer, *args: str, as_user: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(nt.nusactl_binary()), "models", "--socket", str(s.admin_socket), *args]
    if as_user is not None:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def infer_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    return nt.infer_request({"x": x}, outputs=["y"])


def check_answer(resp: nt.Response, x: np.ndarray, what: str) -> int:
    """The answer is y = x @ W of the version it names; returns that version."""
    header, arrays = nt.decode_infer_response(resp)
    v = int(header["model_version"])
    assert v in WEIGHTS, f"{what}: model_version {v}"
    np.testing.assert_allclose(arrays["y"], x @ WEIGHTS[v], rtol=1e-5, atol=1e-5,
                               err_msg=f"{what}: answer not computed by version {v}'s weights")
    return v


# --------------------------------------------------------------------------
# The admin surface


def test_repository_api_is_served_on_the_admin_listener_only(server):
    s = server
    nt.assert_error(nt.https1(s, "POST", "/v2/repository/index"), 404, ["admin"])
    nt.assert_error(nt.https1(s, "POST", f"/v2/repository/models/{MODEL}/unload"), 404, ["admin"])
    # The admin listener wants its token.
    r = nt.https1(s, "POST", "/v2/repository/index", port=s.admin_port)
    nt.assert_error(r, 401, ["Bearer"])
    assert r.headers.get("www-authenticate", "").startswith("Bearer")
    r = nt.https1(s, "POST", "/v2/repository/index", port=s.admin_port,
                  headers={"Authorization": "Bearer " + "0" * 64})
    nt.assert_error(r, 401, ["token"])
    index = nt.admin(s, "POST", "/v2/repository/index").json()
    assert index == [{"name": MODEL, "version": "1", "state": "READY",
                      "reason": index[0]["reason"]}], index
    # The token file is the operator's secret: owner-only.
    assert (s.data_dir / "admin.token").stat().st_mode & 0o077 == 0


def test_tritonclient_index_unload_and_load(server):
    s = server
    x = np.ones((1, 4), dtype=np.float32)
    admin = admin_triton(s)
    try:
        index = admin.get_model_repository_index(headers=auth(s))
        assert [(m["name"], m["version"], m["state"]) for m in index] == [(MODEL, "1", "READY")]
        admin.unload_model(MODEL, headers=auth(s))
        nt.assert_error(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), 404, ["unloaded"])
        index = admin.get_model_repository_index(headers=auth(s))
        assert index == [{"name": MODEL, "state": "UNAVAILABLE", "reason": "unloaded"}], index
        # An unloaded model does not hold the server's readiness.
        assert nt.https1(s, "GET", "/v2/health/ready").status == 200
        admin.load_model(MODEL, headers=auth(s))
        check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "after load")
        # Triton's config override and file uploads are refused, by name.
        with pytest.raises(InferenceServerException, match="not supported"):
            admin.load_model(MODEL, headers=auth(s), config=json.dumps({"max_batch_size": 4}))
        with pytest.raises(InferenceServerException, match="unknown model"):
            admin.load_model("nosuch", headers=auth(s))
    finally:
        admin.close()


# --------------------------------------------------------------------------
# Hot swap under load


class Load:
    """Clients on every protocol sending requests until stopped; each answer
    is checked against the weights of the version it names."""

    def __init__(self, s: nt.NusadServer, workdir: Path):
        self.s, self.workdir = s, workdir
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.failures: list[str] = []
        self.versions_seen: set[int] = set()
        self.threads = [threading.Thread(target=self._run, args=(name, fn), daemon=True)
                        for name, fn in [("http1", self._http1), ("tritonclient", self._triton),
                                         ("http2", self._http2), ("http3", self._http3)]]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, name: str, fn) -> None:
        rng = np.random.default_rng(hash(name) & 0xFFFF)
        i = 0
        while not self.stop.is_set():
            # A few distinct rows, so the cache serves hits during the swaps too.
            x = rng.integers(-2, 3, size=(1 + i % 3, 4)).astype(np.float32)
            i += 1
            try:
                v = fn(x)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                with self.lock:
                    self.failures.append(f"{name}: {e!r}"[:600])
                continue
            with self.lock:
                self.ok[name] = self.ok.get(name, 0) + 1
                self.versions_seen.add(v)

    def _http1(self, x: np.ndarray) -> int:
        return check_answer(nt.https1(self.s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "http1")

    def _triton(self, x: np.ndarray) -> int:
        if not hasattr(self, "_tc"):
            self._tc = httpclient.InferenceServerClient(
                url=self.s.authority, ssl=True, ssl_options={"ca_certs": str(self.s.ca_path)},
                insecure=False, connection_timeout=30, network_timeout=60)
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        result = self._tc.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("y")])
        v = int(result.get_response()["model_version"])
        np.testing.assert_allclose(result.as_numpy("y"), x @ WEIGHTS[v], rtol=1e-5, atol=1e-5)
        return v

    def _http2(self, x: np.ndarray) -> int:
        body, headers = infer_body(x)
        r = nt.curl(self.s, "POST", nt.infer_path(MODEL), http="2", body=body, headers=headers)
        assert r.http_version == "2", r.http_version
        return check_answer(r, x, "http2")

    def _http3(self, x: np.ndarray) -> int:
        body, headers = infer_body(x)
        reqs = [h3client.H3Request("POST", nt.infer_path(MODEL), body, headers) for _ in range(3)]
        versions = [check_answer(r, x, "http3") for r in h3client.h3_requests(self.s, reqs)]
        return versions[-1]


def test_fifty_hot_swaps_under_load_fail_no_request(server, tmp_path):
    s = server
    admin = admin_triton(s)
    models = s.models_dir
    swaps = []
    try:
        with Load(s, tmp_path) as load:
            time.sleep(1.0)
            for i in range(SWAPS):
                if i % 2 == 0:
                    put_version(models, 2, matmul_model(WEIGHTS[2]))
                    want = 2
                else:
                    shutil.rmtree(models / MODEL / "2")
                    want = 1
                t0 = time.monotonic()
                if i % 4 < 2:
                    admin.load_model(MODEL, headers=auth(s))
                    served = json.loads(nusactl(s, "status", "--json").stdout)["models"][0]["serving"]
                else:
                    reply = json.loads(nusactl(s, "load", MODEL, "--json").stdout)
                    assert reply["loaded"] == [want] and reply["serving"] == want, reply
                    served = reply["serving"]
                swaps.append(time.monotonic() - t0)
                assert served == want, f"swap {i}: serving {served}, expected {want}"
                # A request sent after the swap returned gets the new version.
                x = np.full((1, 4), float(i), dtype=np.float32)
                assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)),
                                    x, f"after swap {i}") == want
                time.sleep(0.05)
            time.sleep(0.5)
    finally:
        admin.close()
    print(f"\n[swap] {SWAPS} swaps, load call {np.median(swaps) * 1000:.0f} ms median, "
          f"{max(swaps) * 1000:.0f} ms max; requests ok per client {load.ok}")
    assert not load.failures, f"{len(load.failures)} failed requests, e.g. {load.failures[:5]}"
    for client in ("http1", "tritonclient", "http2", "http3"):
        assert load.ok.get(client, 0) >= 10, f"{client} made too few requests: {load.ok}"
    assert load.versions_seen == {1, 2}
    history = nt.admin(s, "GET", f"/v2/nusa/models/{MODEL}/history").json()["events"]
    assert sum(e["event"] == "swap" for e in history) == SWAPS, history[-5:]


# --------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("broken", ["not-onnx", "warm-up-fails"])
def test_a_broken_new_version_is_refused_and_the_old_one_serves(server, broken):
    s = server
    x = np.ones((2, 4), dtype=np.float32)
    data = b"this is not an ONNX model" if broken == "not-onnx" else doubled_rows_model()
    put_version(s.models_dir, 3, data)
    r = nt.admin(s, "POST", f"/v2/repository/models/{MODEL}/load")
    msg = nt.assert_error(r, 400, ["version 3", MODEL])
    if broken == "warm-up-fails":
        assert "warm-up" in msg, msg
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "old serves") == 1
    index = nt.admin(s, "POST", "/v2/repository/index").json()
    assert [(m["name"], m.get("version"), m["state"]) for m in index] == [(MODEL, "1", "READY")]
    history = json.loads(nusactl(s, "history", MODEL, "--json").stdout)["events"]
    assert history[-1]["event"] == "refused" and "version 3" in history[-1]["detail"], history[-1]
    shutil.rmtree(s.models_dir / MODEL / "3")
    assert nt.admin(s, "POST", f"/v2/repository/models/{MODEL}/load").status == 200


# --------------------------------------------------------------------------
# Pins across a restart; nusactl and the socket's uid check


def test_pin_survives_a_restart_and_nusactl_drives_it(server):
    s = server
    x = np.ones((1, 4), dtype=np.float32)
    put_version(s.models_dir, 2, matmul_model(WEIGHTS[2]))
    nusactl(s, "load", MODEL)
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "latest") == 2

    # Pinning version 1 loads it again (the policy keeps only the latest).
    reply = json.loads(nusactl(s, "pin", MODEL, "--version", "1", "--json").stdout)
    assert reply["serving"] == 1 and reply["loaded"] == [1] and reply["kept"] == [2], reply
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "pinned") == 1
    # A version named in the request is still served.
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL, 2), *infer_body(x)), x, "v2") == 2
    nt.assert_error(nt.admin(s, "POST", f"/v2/nusa/models/{MODEL}/pin", b'{"version": 9}'),
                    404, ["version 9", "available: 1, 2"])

    assert s.stop() == 0
    s.start()
    status = json.loads(nusactl(s, "status", "--json").stdout)
    m = status["models"][0]
    assert (m["name"], m["serving"], m["pinned"], m["state"]) == (MODEL, 1, 1, "READY"), m
    assert [v["version"] for v in m["versions"]] == [1, 2]
    assert status["mode"] == "directory"
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "pinned after restart") == 1

    text = nusactl(s, "pin", MODEL, "--latest").stdout
    assert "serving version 2" in text, text
    assert check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "unpinned") == 2
    events = [e["event"] for e in json.loads(nusactl(s, "history", "--json").stdout)["events"]]
    assert "pin" in events and "unpin" in events and "swap" in events, events
    listed = nusactl(s, "list").stdout
    assert MODEL in listed and "onnxruntime" in listed, listed


def test_the_admin_socket_checks_the_callers_uid(server):
    s = server
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        why = "needs root and setpriv (util-linux) to call as another user"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI runs as root with util-linux, so this must run there")
        pytest.skip(why)
    # Let any user reach the socket file, so that only nusad's uid check stands.
    for p in [s.admin_socket, *s.admin_socket.parents]:
        if p == Path("/") or str(p) == "/tmp":
            break
        os.chmod(p, os.stat(p).st_mode | 0o005 | (0o002 if p == s.admin_socket else 0))
    r = nusactl(s, "status", as_user="65534", check=False)
    assert r.returncode != 0
    assert "403" in r.stderr and "uid 65534 may not use" in r.stderr, r.stderr
    # Root (the test) may.
    assert MODEL in nusactl(s, "status").stdout

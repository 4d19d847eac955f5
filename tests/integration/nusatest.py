"""Shared helpers for the nusad integration tests.

Everything the test modules need lives here: starting and stopping a nusad
process, building model repositories, the HTTP clients (http.client over TLS,
curl, ngtcp2's gtlsclient), KServe v2 request bodies and response decoding,
golden comparisons and a Prometheus text-format parser. The HTTP/3 client
built on aioquic is in h3client.py.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import shlex
import platform
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
GOLDEN_PATH = REPO_ROOT / "tests" / "golden" / "tiny-cnn.npz"
DEMO_MODEL = REPO_ROOT / "gateway" / "registry" / "demo" / "tiny-cnn" / "1" / "model.onnx"
MODEL = "tiny-cnn"
INPUT = "input"
OUTPUT = "probs"
INPUT_ROW_SHAPE = (3, 32, 32)
RTOL, ATOL = 1e-4, 1e-5
FLOOD_ROWS = 64  # rows per request in the queue-full test (and that model's max_batch_size)

READY_TIMEOUT_S = float(os.environ.get("NUSAD_READY_TIMEOUT", "60"))
STOP_GRACE_S = 5.0
EXIT_USAGE = 64  # sysexits EX_USAGE: what nusad returns for a bad config


# --------------------------------------------------------------------------
# Golden data


@lru_cache(maxsize=1)
def golden() -> tuple[np.ndarray, np.ndarray]:
    """(inputs float32 [8,3,32,32], probs float32 [8,10]) computed by onnxruntime."""
    with np.load(GOLDEN_PATH) as data:
        inputs = np.ascontiguousarray(data["inputs"], dtype=np.float32)
        probs = np.ascontiguousarray(data["probs"], dtype=np.float32)
    return inputs, probs


def golden_rows(rows: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and expected probs for the given golden row indices (repeats allowed)."""
    inputs, probs = golden()
    idx = list(rows)
    return inputs[idx], probs[idx]


def assert_probs(actual: np.ndarray, expected: np.ndarray, what: str = "probs") -> None:
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, expected float32"
    if not np.allclose(actual, expected, rtol=RTOL, atol=ATOL):
        worst = float(np.max(np.abs(actual - expected)))
        raise AssertionError(f"{what}: differs from golden (max abs diff {worst:g})")


# --------------------------------------------------------------------------
# Ports, model repositories, config files


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (nusad uses one number for both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def toml_dumps(tables: Mapping[str, Any]) -> str:
    """Just enough TOML for our config files: tables of scalars.

    Also: a top-level key whose value is a scalar or a list of scalars is a
    root key (`slo_ms = 50`, written before any table); one whose value is a
    list of mappings is an array of tables (`[[regions]]`); values may be
    lists of scalars (`local_only_clients = ["127.0.0.1/32"]`).
    """

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, os.PathLike):
            return json.dumps(os.fspath(v))
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            # An inline table (a table's table: `regions = { "sg-1" = {...} }`).
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"toml_dumps: unsupported value {v!r}")

    def is_table_array(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)

    out = [f"{k} = {value(v)}" for k, v in tables.items()
           if not isinstance(v, Mapping) and not is_table_array(v)]
    if out:
        out.append("")
    for table, keys in tables.items():
        if isinstance(keys, Mapping):
            out.append(f"[{table}]")
            out.extend(f"{k} = {value(v)}" for k, v in keys.items())
            out.append("")
        elif is_table_array(keys):
            for item in keys:
                out.append(f"[[{table}]]")
                out.extend(f"{k} = {value(v)}" for k, v in item.items())
                out.append("")
    return "\n".join(out)


def batching(max_batch_size: int, max_queue_delay_us: int, max_queue_size: int = 64,
             instances: int = 1) -> dict[str, dict[str, int]]:
    """A model config.toml (as tables) for make_model_repo."""
    return {
        "batching": {
            "max_batch_size": max_batch_size,
            "max_queue_delay_us": max_queue_delay_us,
            "max_queue_size": max_queue_size,
        },
        "instances": {"count": instances},
    }


def make_model_repo(root: Path, models: Mapping[str, tuple[Iterable[int], Mapping | None]],
                    model_files: Mapping[str, bytes] | None = None) -> Path:
    """Build a Triton-shaped repository: root/<model>/<version>/model.onnx (+ config.toml).

    models maps a model name to (versions, config tables or None); every
    version is a copy of the demo tiny-cnn model, unless model_files gives
    that model's ONNX bytes.
    """
    root.mkdir(parents=True, exist_ok=True)
    demo_bytes = DEMO_MODEL.read_bytes()
    for name, (versions, config) in models.items():
        model_bytes = (model_files or {}).get(name, demo_bytes)
        for v in versions:
            vdir = root / name / str(v)
            vdir.mkdir(parents=True, exist_ok=True)
            (vdir / "model.onnx").write_bytes(model_bytes)
        if config is not None:
            (root / name / "config.toml").write_text(toml_dumps(config))
    return root


# --------------------------------------------------------------------------
# The nusad process


def nusad_binary() -> Path:
    return _binary("nusad", "NUSAD_BIN")


def nusactl_binary() -> Path:
    return _binary("nusactl", "NUSACTL_BIN")


def cargo_target_dir() -> Path:
    """Where cargo puts its builds: CARGO_TARGET_DIR if set (relative to the
    working directory, as cargo reads it), else the workspace's target/."""
    configured = os.environ.get("CARGO_TARGET_DIR")
    return Path(configured).absolute() if configured else REPO_ROOT / "target"


def cargo_build_dir(profile: str = "debug") -> Path:
    """The folder of one profile's binaries: target/debug, target/release."""
    return cargo_target_dir() / profile


def _binary(name: str, env: str) -> Path:
    override = os.environ.get(env)
    path = Path(override) if override else cargo_build_dir() / name
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"{name} binary not found at {path}: build it with `cargo build -p {name}` "
            f"(with the same CARGO_TARGET_DIR) or point {env} at one")
    return path


@lru_cache(maxsize=1)
def ort_dylib_path() -> str:
    """ONNX Runtime library for nusad (ort load-dynamic); ORT_DYLIB_PATH wins if set."""
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    lib = REPO_ROOT / ".cache" / "onnxruntime" / f"1.31.1-{platform.machine()}" / "libonnxruntime.so"
    if lib.exists():
        return str(lib)
    out = subprocess.run([str(REPO_ROOT / "scripts" / "fetch-onnxruntime")], check=True,
                         capture_output=True, text=True, timeout=600)
    return out.stdout.strip().splitlines()[-1]


def nusad_env() -> dict[str, str]:
    env = dict(os.environ)
    env["ORT_DYLIB_PATH"] = ort_dylib_path()
    env.setdefault("RUST_BACKTRACE", "1")
    env.setdefault("NO_COLOR", "1")  # plain logs in nusad.log
    return env


def run_nusad(args: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run nusad to completion (for start-up errors); returns text output."""
    return subprocess.run([str(nusad_binary()), *args], env=nusad_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class ServerStartError(RuntimeError):
    pass


class NusadServer:
    """One nusad process with its own ports, data dir and log file."""

    def __init__(self, name: str, workdir: Path, models_dir: Path | None, config: Mapping | None = None):
        self.name = name
        self.workdir = workdir
        self.models_dir = models_dir
        self.data_dir = workdir / "data"
        self.log_path = workdir / "nusad.log"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "nusad.toml"
            self.config_path.write_text(toml_dumps(config))
        # The address nusad listens on (clients connect to 127.0.0.1 either
        # way): 0.0.0.0 makes it reachable from off the box.
        self.listen_host = "127.0.0.1"
        self.port = 0
        self.metrics_port = 0
        self.admin_port = 0
        # What "started" waits for; a server with a broken model is live, not ready.
        self.ready_path = "/v2/health/ready"
        self.proc: subprocess.Popen | None = None
        # Added to nusad's environment (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
        self.env: dict[str, str] = {}
        self._ssl: dict[tuple[str, ...], ssl.SSLContext] = {}

    # -- paths and URLs
    @property
    def ca_path(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def admin_socket(self) -> Path:
        return self.data_dir / "admin.sock"

    @property
    def admin_token(self) -> str:
        """The token nusad generated for its admin listener."""
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def admin_authority(self) -> str:
        return f"{self.host}:{self.admin_port}"

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"https://{self.authority}{path}"

    def ssl_context(self, alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
        """Client context that verifies the server against DATA/tls/ca.pem."""
        if alpn not in self._ssl:
            ctx = ssl.create_default_context(cafile=str(self.ca_path))
            ctx.set_alpn_protocols(list(alpn))
            self._ssl[alpn] = ctx
        return self._ssl[alpn]

    # -- life cycle
    def start(self, attempts: int = 3, wait: bool = True) -> "NusadServer":
        """Start nusad; with wait, return once /v2/health/ready answers 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(attempts):
            self.port, self.metrics_port, self.admin_port = free_port(), free_port(), free_port()
            while len({self.port, self.metrics_port, self.admin_port}) < 3:
                self.metrics_port, self.admin_port = free_port(), free_port()
            args = [str(nusad_binary()),
                    "--listen", f"{self.listen_host}:{self.port}",
                    "--data", str(self.data_dir),
                    "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                    "--admin-listen", f"127.0.0.1:{self.admin_port}"]
            if self.models_dir is not None:  # None: the bundled demo model
                args += ["--models", str(self.models_dir)]
            if self.config_path is not None:
                args += ["--config", str(self.config_path)]
            # A command to run nusad under (the benchmark pins it with taskset,
            # which execs nusad, so the pid stays nusad's).
            args = shlex.split(os.environ.get("NUSAD_WRAP", "")) + args
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== {' '.join(args)}\n".encode())
                log.flush()
                attempt_start = log.tell()
                self.proc = subprocess.Popen(args, env={**nusad_env(), **self.env}, stdout=log,
                                             stderr=log, stdin=subprocess.DEVNULL, cwd=self.workdir)
            if not wait:
                return self
            try:
                self._wait_ready()
                return self
            except ServerStartError:
                # Another process may have grabbed a port between the probe and the bind.
                attempt_log = self.log_path.read_bytes()[attempt_start:].decode("utf-8", "replace")
                if attempt + 1 < attempts and "in use" in attempt_log.lower():
                    continue
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last_err = "no attempt made"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"nusad ({self.name}) exited with code {self.proc.returncode} before it was "
                    f"ready; log {self.log_path}:\n{self.log_tail()}")
            if self.ca_path.exists():
                try:
                    self._ssl.clear()  # the CA file may have been half-written last time
                    r = https1(self, "GET", self.ready_path, timeout=2)
                    if r.status == 200:
                        return
                    last_err = f"status {r.status}: {r.body[:200]!r}"
                except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                    last_err = repr(e)
            else:
                last_err = f"{self.ca_path} does not exist yet"
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(
            f"nusad ({self.name}) not ready after {READY_TIMEOUT_S:.0f} s (last: {last_err}); "
            f"log {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_checked(self, what: str | None = None) -> None:
        """Stops the server at the end of a fixture; fails (with its log) if it
        had exited by itself while the tests ran."""
        crashed = not self.alive()
        code = self.stop()
        if crashed:
            raise AssertionError(f"nusad ({what or self.name}) exited with code {code} while the "
                                 f"tests ran; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, max_bytes: int = 20000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-max_bytes:].decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"NusadServer({self.name!r}, port={self.port}, metrics_port={self.metrics_port})"


def start_server(name: str, workdir: Path, models: Mapping[str, tuple[Iterable[int], Mapping | None]],
                 config: Mapping | None = None, model_files: Mapping[str, bytes] | None = None,
                 ready_path: str | None = None) -> NusadServer:
    models_dir = make_model_repo(workdir / "models", models, model_files)
    server = NusadServer(name, workdir, models_dir, config)
    if ready_path is not None:
        server.ready_path = ready_path
    return server.start()


# --------------------------------------------------------------------------
# Responses and the HTTP/1.1 + HTTP/2 clients


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    http_version: str = ""

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response body is not JSON ({e}): {self.body[:300]!r}") from None

    def __str__(self) -> str:
        return f"HTTP/{self.http_version} {self.status} {self.headers} {self.body[:300]!r}"


def join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        k = k.strip().lower()
        out[k] = f"{out[k]}, {v.strip()}" if k in out else v.strip()
    return out


def https1(server: NusadServer, method: str, path: str, body: bytes | None = None,
           headers: Mapping[str, str] | None = None, timeout: float = 30,
           port: int | None = None) -> Response:
    """One request over a fresh HTTP/1.1 TLS connection (ALPN http/1.1), CA-verified.

    Full control over headers and body, so it is also the client for malformed
    requests. Content-Length is set from the body unless given in headers.
    If the server answers and closes before the whole body is sent (413), the
    response is still read.
    """
    conn = http.client.HTTPSConnection(server.host, port or server.port, timeout=timeout,
                                       context=server.ssl_context())
    try:
        hdrs = dict(headers or {})
        if body is not None and not any(k.lower() == "content-length" for k in hdrs):
            hdrs["Content-Length"] = str(len(body))
        try:
            conn.request(method, path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
            pass  # the server may reply early and stop reading; the reply is what we want
        return _read_response(conn)
    finally:
        conn.close()


def admin(server: NusadServer, method: str, path: str, body: bytes | None = None,
          headers: Mapping[str, str] | None = None, timeout: float = 120) -> Response:
    """A request to the admin listener with the admin token (loads wait for warm-up)."""
    hdrs = {"Authorization": f"Bearer {server.admin_token}", **dict(headers or {})}
    return https1(server, method, path, body, hdrs, timeout=timeout, port=server.admin_port)


def _read_response(conn: http.client.HTTPConnection) -> Response:
    resp = conn.getresponse()
    data = resp.read()
    return Response(resp.status, join_headers(resp.getheaders()), data, "1.1")


class Https1Pool:
    """Pre-connected HTTP/1.1 TLS connections, for firing many requests at once."""

    def __init__(self, server: NusadServer, n: int, timeout: float = 60):
        self.conns = []
        for _ in range(n):
            c = http.client.HTTPSConnection(server.host, server.port, timeout=timeout,
                                            context=server.ssl_context())
            c.connect()
            self.conns.append(c)

    def request(self, i: int, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        self.conns[i].request(method, path, body=body, headers=dict(headers or {}))
        return _read_response(self.conns[i])

    def close(self) -> None:
        for c in self.conns:
            c.close()


def fire_at_once(server: NusadServer, bodies: list[tuple[bytes, Mapping[str, str]]],
                 path: str | None = None) -> list[Response]:
    """POST each (body, headers) on its own pre-opened HTTP/1.1 connection, all released
    together by a barrier; responses in order. For batching and queue-full tests."""
    path = path or infer_path()
    pool = Https1Pool(server, len(bodies))
    barrier = threading.Barrier(len(bodies))

    def one(i: int) -> Response:
        barrier.wait(timeout=30)
        return pool.request(i, "POST", path, *bodies[i])

    try:
        with ThreadPoolExecutor(len(bodies)) as ex:
            return list(ex.map(one, range(len(bodies))))
    finally:
        pool.close()


def curl(server: NusadServer, method: str, path: str, *, http: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, timeout: float = 60) -> Response:
    """One request with curl; http is "1.1" or "2" (--http1.1 / --http2 over TLS, ALPN)."""
    flag = {"1.1": "--http1.1", "2": "--http2"}[http]
    with tempfile.TemporaryDirectory(prefix="nusa-curl-") as tmp:
        hdr_file, out_file, in_file = (os.path.join(tmp, n) for n in ("headers", "body", "request"))
        cmd = ["curl", "--silent", "--show-error", flag, "--cacert", str(server.ca_path),
               "--max-time", str(timeout), "--dump-header", hdr_file, "--output", out_file,
               "--write-out", "%{http_code} %{http_version}"]
        if body is not None:
            Path(in_file).write_bytes(body)
            cmd += ["--data-binary", f"@{in_file}"]
        if method != ("POST" if body is not None else "GET"):
            cmd += ["--request", method]
        for k, v in (headers or {}).items():
            cmd += ["--header", f"{k}: {v}"]
        cmd.append(server.url(path))
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        assert p.returncode == 0, f"curl failed ({p.returncode}): {p.stderr.strip()}\n{' '.join(cmd)}"
        code, version = p.stdout.split()
        # --dump-header holds one block per response (1xx first); keep the last one.
        blocks = [b for b in re.split(r"\r?\n\r?\n", Path(hdr_file).read_text("latin-1")) if b.strip()]
        lines = blocks[-1].splitlines()[1:] if blocks else []
        hdrs = join_headers(tuple(line.split(":", 1)) for line in lines if ":" in line)
        return Response(int(code), hdrs, Path(out_file).read_bytes(), version)


# --------------------------------------------------------------------------
# HTTP/3 with ngtcp2's gtlsclient
#
# gtlsclient (ngtcp2 0.12.1 examples client, GnuTLS) has no option to load a CA
# file and does not verify the server certificate at all: it loads the system
# trust store but calls no GnuTLS peer-verification function (nm -D shows none),
# so these requests are unverified; the aioquic tests cover certificate
# verification over HTTP/3. With a numeric host it sends SNI "localhost".
# It cannot send custom request headers either: a POST carries only
# content-length, so the body must be a JSON infer request.

_GTLS_HEADER_RE = re.compile(r"^http: stream 0x[0-9a-f]+ \[(:?[^:\]\s]+): (.*)\]\s*$", re.M)


def gtlsclient(server: NusadServer, path: str, workdir: Path, *, data: bytes | None = None,
               timeout: float = 60) -> Response:
    """GET (or POST data) path over HTTP/3 with gtlsclient; the body comes from --download."""
    download = workdir / "download"
    download.mkdir(parents=True, exist_ok=True)
    cmd = ["gtlsclient", "--exit-on-all-streams-close", "--no-quic-dump",
           "--no-http-dump", f"--download={download}", "--timeout=30s"]
    if data is not None:
        req = workdir / "request.json"
        req.write_bytes(data)
        cmd += ["--http-method=POST", f"--data={req}"]
    cmd += [server.host, str(server.port), server.url(path)]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 0, f"gtlsclient failed ({p.returncode}): {' '.join(cmd)}\n{out[-4000:]}"
    status, headers = parse_gtlsclient_headers(out)
    name = path.rstrip("/").rsplit("/", 1)[-1] or "index.html"
    body_file = download / name
    body = body_file.read_bytes() if body_file.exists() else b""
    return Response(status, headers, body, "3")


def parse_gtlsclient_headers(out: str) -> tuple[int, dict[str, str]]:
    """Response headers from gtlsclient's debug output (so it must not run with --quiet).

    ngtcp2 0.12's example client prints each received header as
    `http: stream 0x0 [name: value]` (the request headers it sends are printed
    as bare `[name: value]` lines, without the prefix).
    """
    pairs = _GTLS_HEADER_RE.findall(out)
    if not pairs:
        raise AssertionError(f"no response headers in gtlsclient output:\n{out[-4000:]}")
    headers = join_headers(pairs)
    return int(headers.pop(":status")), headers


# --------------------------------------------------------------------------
# KServe v2 inference requests and responses


def infer_path(model: str = MODEL, version: str | int | None = None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"


def json_infer_body(x: np.ndarray, *, nested: bool = False, name: str = INPUT,
                    datatype: str = "FP32", shape: Iterable[int] | None = None,
                    outputs: list[dict] | None = None) -> bytes:
    """A JSON-only infer request; data flat (default) or nested like the shape."""
    data = x.tolist() if nested else x.reshape(-1).tolist()
    req: dict[str, Any] = {"inputs": [{
        "name": name, "shape": list(shape if shape is not None else x.shape),
        "datatype": datatype, "data": data}]}
    if outputs is not None:
        req["outputs"] = outputs
    return json.dumps(req, separators=(",", ":")).encode()


JSON_HEADERS = {"Content-Type": "application/json"}


def binary_infer_request(x: np.ndarray, *, binary_output: bool = True,
                         binary_data_size: int | None = None, shape: Iterable[int] | None = None,
                         payload: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor-extension request: (body, headers). Overrides build bad requests."""
    raw = np.ascontiguousarray(x, dtype=np.float32).tobytes() if payload is None else payload
    header = json.dumps({
        "inputs": [{"name": INPUT, "shape": list(shape if shape is not None else x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw) if binary_data_size is None
                                   else binary_data_size}}],
        "outputs": [{"name": OUTPUT, "parameters": {"binary_data": binary_output}}],
    }, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(header))}
    return header + raw, headers


def infer_request(inputs: Mapping[str, np.ndarray], *, outputs: Iterable[str] | None = None,
                  binary_input: bool = True, binary_output: bool = True,
                  parameters: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """An FP32 infer request for any model: (body, headers).

    binary_input: the binary tensor extension (raw bytes after a JSON header),
    else a JSON-only body with flat data. outputs: the names to ask for (each
    with binary_data = binary_output), or None to ask for none by name (all,
    always JSON). parameters: request-level parameters.
    """
    req: dict[str, Any] = {"inputs": []}
    raw = b""
    for name, x in inputs.items():
        x = np.ascontiguousarray(x, dtype=np.float32)
        entry: dict[str, Any] = {"name": name, "shape": list(x.shape), "datatype": "FP32"}
        if binary_input:
            data = x.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            raw += data
        else:
            entry["data"] = x.reshape(-1).tolist()
        req["inputs"].append(entry)
    if outputs is not None:
        req["outputs"] = [{"name": o, "parameters": {"binary_data": binary_output}} for o in outputs]
    if parameters:
        req["parameters"] = dict(parameters)
    header = json.dumps(req, separators=(",", ":")).encode()
    if not binary_input:
        return header, dict(JSON_HEADERS)
    return header + raw, {"Content-Type": "application/octet-stream",
                          "Inference-Header-Content-Length": str(len(header))}


def served_by(resp: Response) -> str:
    """The nusa-served-by header: cache, local or cloud:<region> ("" when absent)."""
    return resp.headers.get("nusa-served-by", "")


NP_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64,
             "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8,
             "BOOL": np.bool_}


def decode_infer_response(resp: Response) -> tuple[dict, dict[str, np.ndarray]]:
    """(JSON header, {output name: array}) of a 200 infer response, JSON or binary outputs."""
    assert resp.status == 200, f"infer failed: {resp}"
    hlen = resp.headers.get("inference-header-content-length")
    if hlen is not None:
        n = int(hlen)
        assert n <= len(resp.body), f"Inference-Header-Content-Length {n} > body {len(resp.body)}"
        header, rest = json.loads(resp.body[:n]), resp.body[n:]
    else:
        header, rest = resp.json(), b""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for out in header["outputs"]:
        dtype = NP_DTYPES[out["datatype"]]
        shape = tuple(out["shape"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            assert offset + size <= len(rest), f"{out['name']}: binary section past end of body"
            arr = np.frombuffer(rest[offset:offset + size], dtype=dtype)
            offset += size
        else:
            arr = np.array(out["data"], dtype=dtype)
        assert arr.size == int(np.prod(shape)), f"{out['name']}: {arr.size} values for shape {shape}"
        arrays[out["name"]] = arr.reshape(shape)
    assert offset == len(rest), f"{len(rest) - offset} unexplained bytes after the binary outputs"
    return header, arrays


def assert_infer_ok(resp: Response, expected: np.ndarray, *, version: str | None = None,
                    binary: bool | None = None) -> dict:
    """The response is a correct tiny-cnn answer; returns its JSON header."""
    header, arrays = decode_infer_response(resp)
    assert OUTPUT in arrays, f"no {OUTPUT!r} output in {header}"
    assert_probs(arrays[OUTPUT], expected)
    if version is not None:
        assert str(header.get("model_version")) == version, f"model_version in {header}"
    if binary is not None:
        is_binary = "binary_data_size" in (header["outputs"][0].get("parameters") or {})
        assert is_binary == binary, f"expected binary output={binary}: {header}"
    return header


def assert_error(resp: Response, status: int, mentions: Iterable[str | tuple[str, ...]] = ()) -> str:
    """An error reply: status, JSON body {"error": "..."}, message naming what was wrong.

    Each item of mentions must appear in the message (case-insensitive); a tuple
    means any one of its strings.
    """
    assert resp.status == status, f"expected {status}, got {resp}"
    body = resp.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip(), \
        f"error body must be {{\"error\": \"...\"}}: {resp.body[:300]!r}"
    msg = body["error"]
    for m in mentions:
        alts = (m,) if isinstance(m, str) else m
        assert any(a.lower() in msg.lower() for a in alts), \
            f"error message {msg!r} should mention {' or '.join(map(repr, alts))}"
    return msg


def good_infer_http1(server: NusadServer, model: str = MODEL) -> None:
    """The server still answers a correct request (after bad ones).

    Binary input keeps the body small (24 KiB) so it fits a 64 KiB body limit.
    """
    x, expected = golden_rows([0, 1])
    body, headers = binary_infer_request(x, binary_output=False)
    assert_infer_ok(https1(server, "POST", infer_path(model), body, headers), expected)


# --------------------------------------------------------------------------
# Prometheus text format


@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_prometheus(text: str) -> list[Sample]:
    """Parse Prometheus / OpenMetrics text exposition (comments and # EOF skipped)."""
    samples = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        line = line.split(" # ", 1)[0]  # drop an OpenMetrics exemplar
        m = _SAMPLE_RE.match(line)
        if not m:
            raise AssertionError(f"metrics line {lineno} unparsable: {line!r}")
        name, label_text, value = m.groups()
        labels: dict[str, str] = {}
        pos = 0
        label_text = label_text or ""
        while pos < len(label_text):
            lm = _LABEL_RE.match(label_text, pos)
            if not lm:
                raise AssertionError(f"metrics line {lineno}: bad labels {label_text!r}")
            labels[lm.group(1)] = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)),
                                         lm.group(2))
            pos = lm.end()
        samples.append(Sample(name, labels, float(value)))
    return samples


def scrape_metrics(server: NusadServer, timeout: float = 10) -> list[Sample]:
    conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200, f"/metrics: {resp.status} {text[:300]}"
    finally:
        conn.close()
    return parse_prometheus(text)


def select(samples: Iterable[Sample], name: str, **labels: str) -> list[Sample]:
    return [s for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def metric_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in select(samples, name, **labels))


def bucket(samples: Iterable[Sample], name: str, le: float, **labels: str) -> float:
    """Cumulative count of a histogram bucket, le compared as a number ("1" == "1.0")."""
    found = [s for s in select(samples, f"{name}_bucket", **labels)
             if float(s.labels.get("le", "nan")) == le]
    assert found, f"no {name}_bucket{{le={le}}} for {labels}"
    return sum(s.value for s in found)


def wait_for_metrics(server: NusadServer, check: Callable[[list[Sample]], None],
                     timeout: float = 5) -> list[Sample]:
    """Scrape until check(samples) stops raising AssertionError (metrics may lag the reply)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape_metrics(server)
        try:
            check(samples)
            return samples
        except AssertionError as e:
            if time.monotonic() > deadline:
                names = sorted({s.name for s in samples if s.name.startswith("nusa_")})
                raise AssertionError(f"{e}\n(nusa_* series present: {names})") from None
        time.sleep(0.2)

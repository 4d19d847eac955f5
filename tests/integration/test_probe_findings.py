"""Regressions for the black-box probe's findings (issue 19), each with a real
client against a real nusad: request-level `parameters` bounded, canonical
Inference-Header-Content-Length, malformed HTTP/3 requests reset, the metrics
port's timeouts and connection bound, the HTTP/2 preface held no longer than
the handshake timeout, accept errors logged at a bounded rate, cache.redb
private, and the local CA's bounded validity with renewal of the server
certificate from the kept CA.

The traceparent rules (invalid, all-zero or repeated: dropped) are unit tests
in gateway/ingress/src/request.rs: nusad passes traceparent only to regions
and logs no request headers, so no client can see the difference.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from aioquic.asyncio import connect
from aioquic.h3.events import DataReceived, HeadersReceived

import nusatest as nt
from h3client import H3ClientProtocol, _configuration

pytestmark = pytest.mark.timeout(180)

HANDSHAKE_S = 2.0   # limits.handshake_timeout_ms of the probe server
IDLE_S = 20.0       # limits.idle_timeout_ms: well past the handshake timeout + grace,
                    # so a connection closed in time was not closed for being idle
GRACE_S = 5.0       # "closed within the timeout + 5 s"
H3_MESSAGE_ERROR = 0x10E
MAX_PARAMETERS_BYTES = 64 << 10   # nusa_proto::MAX_PARAMETERS_BYTES
MAX_PARAMETERS_DEPTH = 16         # nusa_proto::MAX_PARAMETERS_DEPTH
MAX_METRICS_CONNECTIONS = 64      # nusa_ingress::MAX_METRICS_CONNECTIONS


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """Short handshake and idle timeouts; a body limit roomy enough for 66 MB."""
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=8, max_queue_delay_us=1000))}
    config = {"limits": {"max_body_bytes": 96 << 20,
                         "handshake_timeout_ms": int(HANDSHAKE_S * 1000),
                         "idle_timeout_ms": int(IDLE_S * 1000)}}
    server = nt.start_server("probe", tmp_path_factory.mktemp("nusad-probe"), models, config)
    try:
        yield server
    finally:
        server.stop_checked("probe")


def peak_rss_mb(server: nt.NusadServer) -> float:
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def closed_within(sock, limit_s: float) -> float:
    """Reads (and drops) whatever the server sends until it closes; the seconds it took.
    Fails if the connection is still open after limit_s."""
    start = time.monotonic()
    sock.settimeout(0.5)
    while time.monotonic() - start < limit_s:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except (socket.timeout, ssl.SSLWantReadError):
            continue
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return time.monotonic() - start
    raise AssertionError(f"connection still open after {limit_s} s")


# --------------------------------------------------------------------------
# 3. request-level parameters


def nested_parameters_body(target_bytes: int) -> bytes:
    """An infer request whose `parameters` is target_bytes of empty arrays: the probe's body."""
    req = json.loads(nt.json_infer_body(nt.golden_rows([0])[0]))
    head = json.dumps({"inputs": req["inputs"]}, separators=(",", ":"))[:-1]
    n = target_bytes // 3
    return (head + ',"parameters":{"p":[' + "[]," * n + '[]]}}').encode()


def test_large_parameters_are_refused_without_a_tree_of_them(probe):
    before = peak_rss_mb(probe)
    body = nested_parameters_body(66 << 20)
    r = nt.https1(probe, "POST", nt.infer_path(), body, nt.JSON_HEADERS, timeout=120)
    nt.assert_error(r, 400, ["parameters", str(MAX_PARAMETERS_BYTES)])
    after = peak_rss_mb(probe)
    print(f"peak RSS {before:.0f} MB -> {after:.0f} MB for a {len(body) >> 20} MB body")
    # The body itself is held (and the client's copy is in this process);
    # a tree of it would be ~12x, 800 MB.
    assert after - before < 400, f"peak RSS grew {after - before:.0f} MB"
    nt.good_infer_http1(probe)


@pytest.mark.parametrize("where", ["request", "input", "output"])
def test_deep_parameters_are_refused(probe, where):
    deep = "[" * MAX_PARAMETERS_DEPTH + "]" * MAX_PARAMETERS_DEPTH
    req = json.loads(nt.json_infer_body(nt.golden_rows([0])[0]))
    marker = '"PARAMS"'
    if where == "request":
        req["parameters"] = {"p": "PARAMS"}
    elif where == "input":
        req["inputs"][0]["parameters"] = {"p": "PARAMS"}
    else:
        req["outputs"] = [{"name": nt.OUTPUT, "parameters": {"p": "PARAMS"}}]
    text = json.dumps(req, separators=(",", ":")).replace(marker, deep)
    r = nt.https1(probe, "POST", nt.infer_path(), text.encode(), nt.JSON_HEADERS)
    nt.assert_error(r, 400, ["parameters", f"{MAX_PARAMETERS_DEPTH} levels"])
    # Within both bounds, parameters still work.
    ok = json.loads(nt.json_infer_body(nt.golden_rows([0])[0]))
    ok["parameters"] = {"priority": 1, "extra": {"a": [1, 2, {"b": None}]}}
    r = nt.https1(probe, "POST", nt.infer_path(), json.dumps(ok).encode(), nt.JSON_HEADERS)
    nt.assert_infer_ok(r, nt.golden_rows([0])[1])


# --------------------------------------------------------------------------
# Inference-Header-Content-Length: canonical decimal only


@pytest.mark.parametrize("spell", ["+{}", "0{}"], ids=["plus", "leading-zero"])
def test_header_length_must_be_canonical(probe, spell):
    body, headers = nt.binary_infer_request(nt.golden_rows([0])[0])
    key = "Inference-Header-Content-Length"
    headers[key] = spell.format(headers[key])
    r = nt.https1(probe, "POST", nt.infer_path(), body, headers)
    nt.assert_error(r, 400, ["Inference-Header-Content-Length", "canonical"])


# --------------------------------------------------------------------------
# 4. HTTP/3: content-length and connection-specific headers


class RawH3(H3ClientProtocol):
    """Sends a request's header list exactly as given (no content-length added)."""

    async def raw(self, headers: list[tuple[str, str]], body: bytes) -> tuple[str, object]:
        stream_id = self._quic.get_next_available_stream_id()
        fut = asyncio.get_running_loop().create_future()
        self._raw = getattr(self, "_raw", {})
        self._raw[stream_id] = [fut, None, bytearray()]
        self._http.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in headers],
                                end_stream=not body)
        if body:
            self._http.send_data(stream_id, body, end_stream=True)
        self.transmit()
        return await fut

    def quic_event_received(self, event) -> None:
        from aioquic.quic.events import StreamReset
        raw = getattr(self, "_raw", {})
        if isinstance(event, StreamReset) and event.stream_id in raw:
            fut = raw[event.stream_id][0]
            if not fut.done():
                fut.set_result(("reset", event.error_code))
            return
        for ev in self._http.handle_event(event):
            entry = raw.get(getattr(ev, "stream_id", None))
            if entry is None or entry[0].done():
                continue
            if isinstance(ev, HeadersReceived):
                entry[1] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, DataReceived):
                entry[2] += ev.data
            if ev.stream_ended:
                entry[0].set_result(("status", entry[1], bytes(entry[2])))


def h3_raw(server: nt.NusadServer, extra: list[tuple[str, str]], body: bytes,
           path: str | None = None, method: str = "POST"):
    headers = [(":method", method), (":scheme", "https"), (":authority", server.authority),
               (":path", path or nt.infer_path())] + extra

    async def run():
        async with connect(server.host, server.port, configuration=_configuration(server),
                           create_protocol=RawH3) as client:
            return await asyncio.wait_for(client.raw(headers, body), 30)

    return asyncio.run(run())


def infer_body() -> tuple[bytes, dict[str, str]]:
    return nt.json_infer_body(nt.golden_rows([0])[0]), nt.JSON_HEADERS


@pytest.mark.parametrize("declared", [lambda n: 100, lambda n: n + 100, lambda n: n - 1],
                         ids=["shorter", "longer", "one-less"])
def test_h3_content_length_must_match_the_body(probe, declared):
    body, _ = infer_body()
    body = body + b" " * max(0, 15000 - len(body))  # the probe's 15 KB
    got = h3_raw(probe, [("content-type", "application/json"),
                         ("content-length", str(declared(len(body))))], body)
    # Never answered. Reset with H3_MESSAGE_ERROR is what nusad does; on a
    # loaded machine the client has twice seen the stream end with no
    # response instead (no status, no byte), in the "shorter" case, in
    # clean-clone CI runs beside other builds. Still not served; why the
    # reset code is not seen then is an open point of issue 19.
    assert got in (("reset", H3_MESSAGE_ERROR), ("status", None, b"")), got


@pytest.mark.parametrize("header", [("connection", "close"), ("keep-alive", "timeout=5"),
                                    ("proxy-connection", "keep-alive"),
                                    ("transfer-encoding", "chunked"), ("upgrade", "h2c"),
                                    ("te", "gzip"), ("content-length", "+1")],
                         ids=lambda h: f"{h[0]}: {h[1]}")
def test_h3_connection_specific_headers_are_malformed(probe, header):
    body, _ = infer_body()
    extra = [("content-type", "application/json")]
    if header[0] != "content-length":
        extra.append(("content-length", str(len(body))))
    got = h3_raw(probe, extra + [header], body)
    assert got == ("reset", H3_MESSAGE_ERROR), got


def test_h3_well_formed_requests_are_served(probe):
    body, _ = infer_body()
    for extra in ([("content-length", str(len(body)))], [("te", "trailers")], []):
        got = h3_raw(probe, [("content-type", "application/json")] + extra, body)
        assert got[0] == "status" and got[1] == 200, got
    got = h3_raw(probe, [], b"", path="/v2/health/ready", method="GET")
    assert got[:2] == ("status", 200), got


# --------------------------------------------------------------------------
# 5. the metrics port


def metrics_socket(server: nt.NusadServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)


def test_metrics_idle_connection_is_closed(probe):
    with metrics_socket(probe) as s:
        closed_within(s, min(HANDSHAKE_S, IDLE_S) + GRACE_S)


def test_metrics_slowloris_is_closed(probe):
    socks = [metrics_socket(probe) for _ in range(20)]
    try:
        start = time.monotonic()
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        open_ = list(socks)
        while open_ and time.monotonic() - start < HANDSHAKE_S + GRACE_S:
            for s in list(open_):
                try:
                    s.sendall(b"X-a: b\r\n")  # one header line at a time, never the end
                except OSError:
                    open_.remove(s)
            time.sleep(0.3)
        for s in open_:
            closed_within(s, max(0.5, HANDSHAKE_S + GRACE_S - (time.monotonic() - start)))
    finally:
        for s in socks:
            s.close()
    nt.scrape_metrics(probe)


def test_metrics_kept_alive_connection_is_closed_when_idle(probe):
    with metrics_socket(probe) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        closed_within(s, max(HANDSHAKE_S, IDLE_S) + GRACE_S)


def test_metrics_connections_are_bounded(probe):
    held = [metrics_socket(probe) for _ in range(MAX_METRICS_CONNECTIONS)]
    try:
        time.sleep(0.5)  # all accepted
        with metrics_socket(probe) as extra:
            # Closed at once, long before any timeout.
            assert closed_within(extra, HANDSHAKE_S) < HANDSHAKE_S
    finally:
        for s in held:
            s.close()
    time.sleep(0.5)
    nt.scrape_metrics(probe)


# --------------------------------------------------------------------------
# HTTP/2: the preface and first HEADERS within the handshake timeout

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def tls_h2(server: nt.NusadServer) -> ssl.SSLSocket:
    raw = socket.create_connection((server.host, server.port), timeout=5)
    s = server.ssl_context(("h2",)).wrap_socket(raw, server_hostname=server.host)
    assert s.selected_alpn_protocol() == "h2"
    return s


@pytest.mark.parametrize("send", [b"", H2_PREFACE[:10], H2_PREFACE + EMPTY_SETTINGS],
                         ids=["nothing", "half-preface", "preface-no-headers"])
def test_h2_without_a_request_is_closed_after_the_handshake_timeout(probe, send):
    with tls_h2(probe) as s:
        s.sendall(send)
        closed_within(s, HANDSHAKE_S + GRACE_S)
    r = nt.curl(probe, "GET", "/v2/health/ready", http="2")
    assert (r.status, r.http_version) == (200, "2"), str(r)


# --------------------------------------------------------------------------
# accept errors: at most one warning per 5 s


def test_accept_errors_are_logged_at_a_bounded_rate(tmp_path, monkeypatch):
    # A long handshake timeout keeps the idle connections (and their
    # descriptors) held; a low descriptor limit makes accept fail.
    monkeypatch.setenv("NUSAD_WRAP", "prlimit --nofile=256:256")
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=8, max_queue_delay_us=1000))}
    server = nt.start_server("fd-limit", tmp_path, models,
                             {"limits": {"handshake_timeout_ms": 60_000}})
    socks = []
    try:
        assert Path(f"/proc/{server.proc.pid}/exe").resolve() == nt.nusad_binary().resolve()
        in_use = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
        for _ in range(256 - in_use + 40):
            socks.append(socket.create_connection((server.host, server.port), timeout=5))
        start_log = server.log_path.stat().st_size
        time.sleep(7)
        log = server.log_path.read_bytes()[start_log:].decode("utf-8", "replace")
        lines = [ln for ln in log.splitlines() if "accepting a connection failed" in ln]
        assert 1 <= len(lines) <= 3, f"{len(lines)} accept warnings in 7 s:\n" + "\n".join(lines[:10])
        assert any("suppressed=" in ln and "suppressed=0" not in ln for ln in lines) or len(lines) == 1
        for s in socks:
            s.close()
        time.sleep(0.5)
        nt.good_infer_http1(server)
    finally:
        for s in socks:
            s.close()
        server.stop_checked("fd-limit")


# --------------------------------------------------------------------------
# cache.redb and the local CA


def test_cache_file_is_private(probe):
    path = probe.data_dir / "cache.redb"
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.stat().st_mode & 0o777 == 0o600, oct(path.stat().st_mode)


def cert_end(path: Path) -> dt.datetime:
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)],
                         capture_output=True, text=True, check=True).stdout
    end = out.strip().split("=", 1)[1]
    return dt.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.timezone.utc)


def test_local_ca_and_server_certificate_have_bounded_validity(probe):
    now = dt.datetime.now(dt.timezone.utc)
    tls = probe.data_dir / "tls"
    assert cert_end(tls / "ca.pem") <= now + dt.timedelta(days=3651)
    assert cert_end(tls / "server.pem") <= now + dt.timedelta(days=398)
    assert (tls / "ca.key").stat().st_mode & 0o777 == 0o600


def test_server_certificate_near_its_end_is_renewed_from_the_kept_ca(tmp_path):
    models = {nt.MODEL: ((1,), None)}
    server = nt.start_server("renew", tmp_path, models)
    tls = server.data_dir / "tls"
    server.stop()
    ca_before = (tls / "ca.pem").read_bytes()
    # A server certificate from the kept CA that ends in 5 days.
    key, csr, cert = tls / "server.key", tmp_path / "server.csr", tmp_path / "short.pem"
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj", "/CN=nusad",
                    "-out", str(csr)], check=True, capture_output=True)
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(tls / "ca.pem"),
                    "-CAkey", str(tls / "ca.key"), "-CAcreateserial", "-days", "5",
                    "-extfile", str(ext), "-out", str(cert)], check=True, capture_output=True)
    (tls / "server.pem").write_bytes(cert.read_bytes() + ca_before)
    assert cert_end(tls / "server.pem") < dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6)

    server.start()  # ready means a client trusting the old ca.pem got through
    try:
        assert (tls / "ca.pem").read_bytes() == ca_before, "the CA must stay the same"
        assert cert_end(tls / "server.pem") > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=300)
        r = nt.https1(server, "GET", "/v2/health/ready")
        assert r.status == 200
    finally:
        server.stop_checked("renew")

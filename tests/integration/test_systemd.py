"""nusad under systemd, without systemd: the notify protocol against a
Python NOTIFY_SOCKET, and socket activation done the way systemd does it
(sdactivate.py, and systemd-socket-activate where it is installed).

What systemd itself adds (the units, their sandboxing) is checked by the
appliance image's QEMU test; see systemd/README.md.
"""
from __future__ import annotations

import copy
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import nusatest as nt
from h3client import h3_request

pytestmark = pytest.mark.timeout(180)

SDACTIVATE = Path(__file__).resolve().parent / "sdactivate.py"


# --------------------------------------------------------------------------
# The notify socket


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self) -> None:
        # A short path: sun_path holds 108 bytes, pytest's tmp_path can be long.
        self.dir = tempfile.mkdtemp(prefix="nusa-notify-")
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        # (monotonic arrival time, {key: value}) for every datagram received.
        self.messages: list[tuple[float, dict[str, str]]] = []

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _recv(self, timeout: float) -> dict[str, str] | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), msg))
        return msg

    def wait_for(self, key: str, server: nt.NusadServer, timeout: float = nt.READY_TIMEOUT_S
                 ) -> dict[str, str]:
        """The next message carrying key; fails if nusad exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._recv(0.2)
            if msg is not None and key in msg:
                return msg
            if msg is None and server.proc is not None and server.proc.poll() is not None:
                # Drain what it sent before exiting.
                while (msg := self._recv(0.05)) is not None:
                    if key in msg:
                        return msg
                raise AssertionError(f"nusad exited ({server.proc.returncode}) before sending "
                                     f"{key}; got {self.keys()}\n{server.log_tail()}")
        raise AssertionError(f"no {key} within {timeout:.0f} s; got {self.keys()}")

    def collect(self, seconds: float) -> list[dict[str, str]]:
        """Every message arriving in the next `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None:
                out.append(msg)
        return out

    def keys(self) -> list[str]:
        return [k for _, m in self.messages for k in m]


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


def notified_server(tmp_path: Path, notify: NotifySocket, **env: str) -> nt.NusadServer:
    server = nt.NusadServer("notify", tmp_path, None)
    server.env = {"NOTIFY_SOCKET": notify.path, **env}
    return server.start(wait=False)


def test_ready_watchdog_and_stopping(tmp_path, notify_socket):
    """READY=1 once the port answers, WATCHDOG=1 at half of WATCHDOG_USEC,
    STOPPING=1 on SIGTERM, then a clean exit."""
    server = notified_server(tmp_path, notify_socket, WATCHDOG_USEC="200000")
    try:
        ready = notify_socket.wait_for("READY", server)
        # READY=1 means serving: the very first request is answered, no retry.
        r = nt.https1(server, "GET", "/v2/health/ready", timeout=5)
        assert r.status == 200, str(r)
        assert ready["READY"] == "1"
        assert ready.get("STATUS", "").startswith(f"serving 1 model on https://127.0.0.1:{server.port}"), ready
        assert f"HTTP/3 on UDP 127.0.0.1:{server.port}" in ready["STATUS"], ready
        before = [m for _, m in notify_socket.messages[:-1]]
        assert {"STATUS": "loading models"} in before, before

        # 200 ms watchdog: a ping every 100 ms.
        pings = [m for m in notify_socket.collect(1.5) if m.get("WATCHDOG") == "1"]
        assert 8 <= len(pings) <= 20, f"{len(pings)} WATCHDOG=1 in 1.5 s (expected ~15)"

        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        stopping = notify_socket.wait_for("STOPPING", server, timeout=10)
        assert stopping["STOPPING"] == "1"
        assert "draining" in stopping.get("STATUS", ""), stopping
        assert server.proc.wait(10) == 0, server.log_tail()
    finally:
        server.stop()


def test_watchdog_of_another_process_is_not_pinged(tmp_path, notify_socket):
    """WATCHDOG_PID naming another process (a wrapper's) turns the pings off,
    as sd_watchdog_enabled(3) says."""
    server = notified_server(tmp_path, notify_socket, WATCHDOG_USEC="200000",
                             WATCHDOG_PID=str(os.getpid()))
    try:
        notify_socket.wait_for("READY", server)
        assert not [m for m in notify_socket.collect(0.6) if "WATCHDOG" in m]
    finally:
        server.stop()


# --------------------------------------------------------------------------
# Socket activation


def tcp_listener(port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(socket.SOMAXCONN)
    return s


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def port_of(s: socket.socket) -> int:
    return s.getsockname()[1]


class ActivatedServer(nt.NusadServer):
    """nusad started through sdactivate.py on sockets the test holds, as
    systemd holds those of nusad.socket across restarts. `--listen` and
    `--metrics-listen` name other ports, which must stay unbound."""

    def __init__(self, workdir: Path, fds: list[socket.socket], names: str) -> None:
        super().__init__("activated", workdir, None)
        self.fds, self.names = fds, names
        self.decoy_port, self.decoy_metrics_port = nt.free_port(), nt.free_port()

    def start(self, attempts: int = 1, wait: bool = True) -> "ActivatedServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(SDACTIVATE), self.names,
                ",".join(str(s.fileno()) for s in self.fds),
                str(nt.nusad_binary()),
                "--listen", f"127.0.0.1:{self.decoy_port}",
                "--metrics-listen", f"127.0.0.1:{self.decoy_metrics_port}",
                "--data", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(args, env={**nt.nusad_env(), **self.env}, stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         pass_fds=[s.fileno() for s in self.fds])
        if wait:
            self._wait_ready()
        return self


def on_port(server: nt.NusadServer, port: int) -> nt.NusadServer:
    """The same server seen on another port (its UDP one, for the HTTP/3 client)."""
    other = copy.copy(server)
    other.port = port
    return other


def assert_unbound(port: int) -> None:
    """Nothing listens on 127.0.0.1:port, TCP or UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(ConnectionRefusedError):
            s.connect(("127.0.0.1", port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # would fail with EADDRINUSE


def assert_serves(server: nt.NusadServer, udp_port: int) -> None:
    x, expected = nt.golden_rows([0, 1])
    body, headers = nt.binary_infer_request(x, binary_output=False)
    r = nt.https1(server, "POST", nt.infer_path(), body, headers)
    nt.assert_infer_ok(r, expected)
    assert f'h3=":{udp_port}"' in r.headers.get("alt-svc", ""), r.headers
    r3 = h3_request(on_port(server, udp_port), "POST", nt.infer_path(), nt.json_infer_body(x),
                    nt.JSON_HEADERS)
    nt.assert_infer_ok(r3, expected)


@pytest.fixture
def activation_sockets():
    https, quic, metrics = tcp_listener(), udp_socket(), tcp_listener()
    try:
        yield https, quic, metrics
    finally:
        for s in (https, quic, metrics):
            s.close()


def test_passed_sockets_are_served(tmp_path, activation_sockets):
    """https, quic and metrics come from the passed fds (TCP and UDP on
    different ports); the configured addresses are not bound."""
    https, quic, metrics = activation_sockets
    server = ActivatedServer(tmp_path, [metrics, quic, https], "metrics:quic:https")
    server.port, server.metrics_port = port_of(https), port_of(metrics)
    try:
        server.start()
        assert_serves(server, port_of(quic))
        assert nt.select(nt.scrape_metrics(server), "nusa_requests_total")
        assert_unbound(server.decoy_port)
        assert_unbound(server.decoy_metrics_port)
        log = server.log_tail()
        assert "socket activation: HTTPS on the passed TCP listener" in log, log
    finally:
        server.stop()


def test_restart_refuses_no_connection(tmp_path, activation_sockets):
    """While nusad restarts, the sockets stay open in the launcher (systemd):
    a connection made between the two processes waits in the kernel's queue
    and is served by the new one; no connect is refused at any point."""
    https, quic, metrics = activation_sockets
    server = ActivatedServer(tmp_path, [https, quic], "https:quic")
    server.port = port_of(https)
    refused: list[str] = []
    connects = 0
    stop = threading.Event()

    def prober() -> None:
        nonlocal connects
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
                connects += 1
            except OSError as e:
                refused.append(repr(e))
            time.sleep(0.05)

    thread = threading.Thread(target=prober, daemon=True)
    try:
        server.start()
        thread.start()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(nt.STOP_GRACE_S) == 0, server.log_tail()
        # No process serves now; the listening socket is still open here.
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        server.start(wait=False)
        conn = http.client.HTTPSConnection(server.host, server.port, timeout=60,
                                           context=server.ssl_context())
        conn.sock = server.ssl_context().wrap_socket(waiting, server_hostname=server.host)
        conn.request("GET", "/v2/health/ready")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        conn.close()
        server._wait_ready()
        stop.set()
        thread.join(10)
        assert not refused, refused
        assert connects > 0
        assert_serves(server, port_of(quic))
    finally:
        stop.set()
        server.stop()


def test_socket_of_the_wrong_type_is_a_clear_error(tmp_path, activation_sockets):
    """A UDP socket named https: exit 64 naming the descriptor and its name."""
    _, quic, _ = activation_sockets
    server = ActivatedServer(tmp_path, [quic], "https")
    try:
        server.start(wait=False)
        assert server.proc is not None
        assert server.proc.wait(30) == nt.EXIT_USAGE, server.log_tail()
        log = server.log_tail()
        assert "fd 3 ('https') must be a TCP socket" in log, log
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
def test_systemd_socket_activate_tcp(tmp_path):
    """systemd's own launcher, one unnamed TCP socket: nusad takes it by type
    for HTTPS and binds UDP for HTTP/3 on the same address itself.
    systemd-socket-activate execs nusad at the first connection, which then
    waits in the queue until nusad is ready.

    The socket is IPv6 and dual-stack, as systemd makes `ListenStream=8443`,
    but bound to the IPv4-mapped loopback address so that it listens on
    loopback only; clients reach it on 127.0.0.1."""
    server = nt.NusadServer("socket-activate", tmp_path, None)
    server.port = nt.free_port()
    decoy = nt.free_port()
    server.data_dir.mkdir(parents=True, exist_ok=True)
    args = ["systemd-socket-activate", "-l", f"[::ffff:127.0.0.1]:{server.port}",
            "-E", "ORT_DYLIB_PATH", "-E", "NO_COLOR", "-E", "RUST_BACKTRACE",
            str(nt.nusad_binary()), "--listen", f"127.0.0.1:{decoy}",
            "--metrics-listen", f"127.0.0.1:{nt.free_port()}", "--data", str(server.data_dir)]
    with open(server.log_path, "ab") as log:
        server.proc = subprocess.Popen(args, env=nt.nusad_env(), stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 10
        while True:  # until systemd-socket-activate listens
            try:
                first = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.05)
        first.close()
        server._wait_ready()
        assert_serves(server, server.port)
        assert_unbound(decoy)
        log = server.log_tail()
        assert "Execing" in log, log
        assert f"HTTP/3 on UDP [::ffff:127.0.0.1]:{server.port}" in log, log
    finally:
        server.stop()

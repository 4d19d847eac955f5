"""The fault-injecting proxy itself (no nusad): each mode does what the region
tests rely on, against a plain TCP server that answers every chunk with
the same number of bytes."""
from __future__ import annotations

import socket
import socketserver
import threading
import time

import pytest

from faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(60)

ANSWER = 2000  # bytes back for each request chunk


class _Answer(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while True:
                data = self.request.recv(4096)
                if not data:
                    return
                self.request.sendall(b"a" * ANSWER)
        except OSError:
            pass  # the proxy resets connections on purpose


@pytest.fixture(scope="module")
def target():
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Answer)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def proxy(target):
    with FaultProxy("127.0.0.1", target) as p:
        yield p


def exchange(port: int, timeout: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"hello")
        got = b""
        while len(got) < ANSWER:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def test_pass_and_delay(proxy):
    assert exchange(proxy.port) == b"a" * ANSWER
    proxy.set_mode("delay", delay_s=0.05)
    t0 = time.monotonic()
    assert exchange(proxy.port) == b"a" * ANSWER
    assert time.monotonic() - t0 >= 0.09  # held both ways


def test_refuse_closes_at_once(proxy):
    proxy.set_mode("refuse")
    try:
        got = exchange(proxy.port)
    except ConnectionError:
        got = b""
    assert got == b""
    assert proxy.stats.accepted.get("refuse") == 1


def test_reset_after_some_bytes(proxy):
    proxy.set_mode("reset", reset_after=500)
    with pytest.raises(ConnectionResetError):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            s.sendall(b"hello")
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError(f"FIN instead of RST after {len(got)} bytes")
                got += chunk
                assert len(got) <= 500
    assert proxy.stats.resets >= 1


def test_stall_answers_nothing(proxy):
    proxy.set_mode("stall")
    with pytest.raises(socket.timeout):
        exchange(proxy.port, timeout=0.5)


def test_slow_trickles(proxy):
    proxy.set_mode("slow", trickle_bytes=500, trickle_interval_s=0.05)
    t0 = time.monotonic()
    assert exchange(proxy.port) == b"a" * ANSWER
    assert time.monotonic() - t0 >= 0.15  # 4 pieces, 50 ms apart


def test_mode_change_resets_open_connections(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
        s.sendall(b"hello")
        assert len(s.recv(65536)) > 0
        proxy.set_mode("pass")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            for _ in range(20):
                s.sendall(b"again")
                if not s.recv(65536):
                    raise ConnectionResetError("closed")
                time.sleep(0.01)

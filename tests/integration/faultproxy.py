"""A small fault-injecting TCP proxy for the region tests.

It listens on 127.0.0.1:<port> and forwards bytes both ways to a target
(a region nusad; TLS passes through untouched, so the client still verifies
the region's certificate for 127.0.0.1). It runs an asyncio loop in a
background thread; the test switches modes at any time:

- "pass":   forward everything.
- "refuse": accept, then close at once (the client sees EOF during its
            TLS handshake); nothing reaches the target.
- "reset":  forward, but after `reset_after` bytes have come back from the
            target, reset the client's connection (SO_LINGER 0, then close:
            an RST, not a FIN).
- "stall":  accept and forward nothing, in either direction, until the
            client gives up (or the mode changes).
- "slow":   forward to the target normally, but trickle its answer back,
            `trickle_bytes` every `trickle_interval_s`.
- "delay":  forward both ways, each chunk held `delay_s` first (a slower but
            healthy path).

Changing the mode resets every open connection, so a client with a pooled
HTTP/2 connection meets the new mode on its next request.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass, field

MODES = ("pass", "refuse", "reset", "stall", "slow", "delay")


@dataclass
class ProxyStats:
    accepted: dict[str, int] = field(default_factory=dict)  # per mode at accept time
    bytes_up: int = 0     # client -> target
    bytes_down: int = 0   # target -> client
    resets: int = 0


class _Conn:
    def __init__(self, mode: str, client: asyncio.StreamWriter):
        self.mode = mode
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.down_bytes = 0
        self.tasks: list[asyncio.Task] = []
        self.closed = False


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST: SO_LINGER on with a zero timeout, then abort."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, mode: str = "pass", *,
                 reset_after: int = 3000, trickle_bytes: int = 100,
                 trickle_interval_s: float = 0.05, delay_s: float = 0.005):
        assert mode in MODES, mode
        self.target = (target_host, target_port)
        self.mode = mode
        self.reset_after = reset_after
        self.trickle_bytes = trickle_bytes
        self.trickle_interval_s = trickle_interval_s
        self.delay_s = delay_s
        self.stats = ProxyStats()
        self.port = 0
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    # -- control, from the test's thread
    def start(self) -> "FaultProxy":
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = fut.result(timeout=10)
        return self

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def set_mode(self, mode: str, **params) -> None:
        """Switch mode (and any of reset_after, trickle_bytes, trickle_interval_s,
        delay_s); every open connection is reset."""
        assert mode in MODES, mode

        def apply() -> None:
            for k, v in params.items():
                if not hasattr(self, k):
                    raise AttributeError(k)
                setattr(self, k, v)
            self.mode = mode
            for conn in list(self._conns):
                self._close(conn, reset=True)

        asyncio.run_coroutine_threadsafe(self._call(apply), self._loop).result(timeout=10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                self._close(conn, reset=True)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the loop's side
    @staticmethod
    async def _call(fn) -> None:
        fn()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    def _close(self, conn: _Conn, reset: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        for w in (conn.client, conn.upstream):
            if w is None:
                continue
            if reset:
                _rst(w)
            else:
                w.transport.close()
        for t in conn.tasks:
            if t is not asyncio.current_task():
                t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        self.stats.accepted[mode] = self.stats.accepted.get(mode, 0) + 1
        conn = _Conn(mode, writer)
        self._conns.add(conn)
        if mode == "refuse":
            self._close(conn)
            return
        if mode == "stall":
            # Read and drop whatever the client sends; answer nothing.
            conn.tasks.append(asyncio.current_task())
            try:
                while not conn.closed and await reader.read(65536):
                    pass
            except (OSError, asyncio.CancelledError):
                pass
            self._close(conn)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._close(conn, reset=True)
            return
        conn.upstream = up_writer
        if conn.closed:  # the mode changed while connecting
            _rst(up_writer)
            return
        conn.tasks = [asyncio.ensure_future(self._pipe(conn, reader, up_writer, up=True)),
                      asyncio.ensure_future(self._pipe(conn, up_reader, writer, up=False))]

    async def _pipe(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    up: bool) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if conn.mode == "delay":
                    await asyncio.sleep(self.delay_s)
                if up:
                    self.stats.bytes_up += len(data)
                    dst.write(data)
                    await dst.drain()
                    continue
                if conn.mode == "reset":
                    room = self.reset_after - conn.down_bytes
                    if room <= len(data):
                        if room > 0:
                            dst.write(data[:room])
                            await dst.drain()
                        conn.down_bytes += max(room, 0)
                        self.stats.bytes_down += max(room, 0)
                        self.stats.resets += 1
                        self._close(conn, reset=True)
                        return
                if conn.mode == "slow":
                    for i in range(0, len(data), self.trickle_bytes):
                        dst.write(data[i:i + self.trickle_bytes])
                        await dst.drain()
                        await asyncio.sleep(self.trickle_interval_s)
                else:
                    dst.write(data)
                    await dst.drain()
                conn.down_bytes += len(data)
                self.stats.bytes_down += len(data)
        except (OSError, asyncio.CancelledError):
            pass
        self._close(conn)

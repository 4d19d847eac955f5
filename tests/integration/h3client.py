"""A small HTTP/3 client on aioquic for the tests.

    resp = h3_request(server, "GET", "/v2/health/ready")
    resps = h3_requests(server, [H3Request("POST", path, body, headers), ...])

h3_requests sends all its requests at once on a single QUIC connection (one
stream each) and returns the responses in order. The server certificate is
verified against the server's CA (DATA/tls/ca.pem).
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Mapping, Sequence

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset

from nusatest import NusadServer, Response, join_headers


@dataclasses.dataclass
class H3Request:
    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


class _Stream:
    def __init__(self, future: asyncio.Future):
        self.future = future
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()


class H3ClientProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._http = H3Connection(self._quic)
        self._streams: dict[int, _Stream] = {}

    async def request(self, authority: str, req: H3Request) -> Response:
        stream_id = self._quic.get_next_available_stream_id()
        headers = [(b":method", req.method.encode()), (b":scheme", b"https"),
                   (b":authority", authority.encode()), (b":path", req.path.encode())]
        if req.body:
            headers.append((b"content-length", str(len(req.body)).encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in req.headers.items()]
        stream = _Stream(asyncio.get_running_loop().create_future())
        self._streams[stream_id] = stream
        self._http.send_headers(stream_id, headers, end_stream=not req.body)
        if req.body:
            self._http.send_data(stream_id, req.body, end_stream=True)
        self.transmit()
        return await stream.future

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ConnectionTerminated):
            for stream in self._streams.values():
                if not stream.future.done():
                    stream.future.set_exception(ConnectionError(
                        f"QUIC connection closed: error {event.error_code} {event.reason_phrase}"))
            return
        if isinstance(event, StreamReset) and event.stream_id in self._streams:
            stream = self._streams[event.stream_id]
            if not stream.future.done():
                stream.future.set_exception(ConnectionError(
                    f"stream {event.stream_id} reset by server: error {event.error_code}"))
            return
        for h3_event in self._http.handle_event(event):
            if not isinstance(h3_event, (HeadersReceived, DataReceived)):
                continue
            stream = self._streams.get(h3_event.stream_id)
            if stream is None or stream.future.done():
                continue
            if isinstance(h3_event, HeadersReceived):
                pairs = [(k.decode(), v.decode()) for k, v in h3_event.headers]
                status = next((int(v) for k, v in pairs if k == ":status"), None)
                if stream.status is None and status is not None and status >= 200:
                    stream.status = status
                    stream.headers = [(k, v) for k, v in pairs if not k.startswith(":")]
                # 1xx heads and trailers are ignored
            else:
                stream.body += h3_event.data
            if h3_event.stream_ended:
                if stream.status is None:
                    stream.future.set_exception(ConnectionError("stream ended without a response"))
                else:
                    stream.future.set_result(Response(stream.status, join_headers(stream.headers),
                                                      bytes(stream.body), "3"))


def _configuration(server: NusadServer, client_cert: tuple[str, str] | None = None) -> QuicConfiguration:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN,
                               server_name=server.host, idle_timeout=30.0)
    config.load_verify_locations(cafile=str(server.ca_path))
    if client_cert is not None:
        config.load_cert_chain(client_cert[0], client_cert[1])
    return config


async def _run(server: NusadServer, reqs: Sequence[H3Request],
               client_cert: tuple[str, str] | None = None) -> list[Response]:
    async with connect(server.host, server.port, configuration=_configuration(server, client_cert),
                       create_protocol=H3ClientProtocol) as client:
        assert isinstance(client, H3ClientProtocol)
        assert client._quic.tls.alpn_negotiated == "h3", "server did not negotiate h3"
        return list(await asyncio.gather(*(client.request(server.authority, r) for r in reqs)))


def h3_requests(server: NusadServer, reqs: Sequence[H3Request], timeout: float = 60,
                client_cert: tuple[str, str] | None = None) -> list[Response]:
    """Send all reqs concurrently on one HTTP/3 connection; responses in the same order.
    client_cert: (certificate PEM path, key PEM path) for mutual TLS."""

    async def bounded():
        return await asyncio.wait_for(_run(server, reqs, client_cert), timeout)

    return asyncio.run(bounded())


def h3_request(server: NusadServer, method: str, path: str, body: bytes = b"",
               headers: Mapping[str, str] | None = None, timeout: float = 60) -> Response:
    return h3_requests(server, [H3Request(method, path, body, dict(headers or {}))], timeout)[0]

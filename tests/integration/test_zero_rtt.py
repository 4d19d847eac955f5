"""QUIC 0-RTT: with tls.early_data on, GET and HEAD are served from early data
and anything else gets 425 Too Early; with it off, 0-RTT is refused and the
same requests are served after the handshake.

aioquic resumes with a session ticket from a first connection and sends its
requests in the first flight (wait_connected=False), i.e. in 0-RTT packets.
The client then holds back everything it would send for a moment, its
handshake Finished included, so the server reads the requests while the
handshake is still open, as it would for a replayed flight (whose handshake
never completes).
"""
from __future__ import annotations

import asyncio
from typing import Iterator

import pytest
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.h3.connection import H3_ALPN

import nusatest as nt
from h3client import H3ClientProtocol, H3Request, h3_request

pytestmark = pytest.mark.timeout(120)


class HoldingProtocol(H3ClientProtocol):
    """Sends its first flight, then holds every datagram for HOLD seconds
    from the first one it receives."""

    HOLD = 0.3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._release_at = None
        self._scheduled = False

    def datagram_received(self, data, addr):
        if self._release_at is None:
            self._release_at = self._loop.time() + self.HOLD
        super().datagram_received(data, addr)

    def transmit(self) -> None:
        if self._release_at is not None and self._loop.time() < self._release_at:
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_at(self._release_at, self.transmit)
            return
        super().transmit()


def _config(server: nt.NusadServer, ticket=None, store=None) -> QuicConfiguration:
    c = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost", idle_timeout=30.0)
    c.load_verify_locations(cafile=str(server.ca_path))
    c.session_ticket = ticket
    return c


async def _resumed_requests(server: nt.NusadServer, reqs: list[H3Request]):
    tickets = []
    first = _config(server)
    async with connect(server.host, server.port, configuration=first, create_protocol=H3ClientProtocol,
                       session_ticket_handler=tickets.append) as client:
        await client.request(server.authority, H3Request("GET", "/v2/health/live"))
        # rustls sends its tickets right after the handshake; give them a moment.
        for _ in range(50):
            if tickets:
                break
            await asyncio.sleep(0.02)
    assert tickets, "the server issued no session ticket"
    second = _config(server, ticket=tickets[-1])
    async with connect(server.host, server.port, configuration=second, create_protocol=HoldingProtocol,
                       wait_connected=False) as client:
        responses = await asyncio.gather(*(client.request(server.authority, r) for r in reqs))
        tls = client._quic.tls
        return responses, tls.session_resumed, tls.early_data_accepted


def resumed_requests(server, reqs):
    return asyncio.run(asyncio.wait_for(_resumed_requests(server, reqs), 60))


def _requests() -> list[H3Request]:
    x, _ = nt.golden_rows([0])
    return [
        H3Request("GET", "/v2/health/ready"),
        H3Request("POST", nt.infer_path(), nt.json_infer_body(x), nt.JSON_HEADERS),
    ]


@pytest.fixture(scope="module")
def early_server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    models = {nt.MODEL: ((1,), None)}
    server = nt.start_server("early-data", tmp_path_factory.mktemp("nusad-early"), models,
                             {"tls": {"early_data": True}})
    try:
        yield server
    finally:
        server.stop()


def test_early_data_serves_get_and_refuses_post_with_425(early_server):
    (ready, infer), resumed, accepted = resumed_requests(early_server, _requests())
    assert resumed, "the session was not resumed"
    assert accepted, "the server did not accept 0-RTT"
    assert ready.status == 200, ready
    nt.assert_error(infer, 425, ["early data"])
    # The same POST after the handshake is served, on fresh connections that
    # the server also opened for 0.5-RTT: none of them is mistaken for early data.
    x, want = nt.golden_rows([0])
    for _ in range(5):
        r = h3_request(early_server, "POST", nt.infer_path(), nt.json_infer_body(x), nt.JSON_HEADERS)
        nt.assert_infer_ok(r, want)


def test_without_early_data_zero_rtt_is_refused_and_requests_wait_for_the_handshake(server):
    x, want = nt.golden_rows([0])
    (ready, infer), resumed, accepted = resumed_requests(server, _requests())
    assert not accepted, "0-RTT accepted although tls.early_data is off"
    assert ready.status == 200
    nt.assert_infer_ok(infer, want)

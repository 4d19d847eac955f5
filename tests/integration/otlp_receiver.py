"""An OTLP/HTTP trace receiver for the tests and the benchmark.

No OpenTelemetry Collector binary can be installed here, so this is one
built from the protocol's published definitions (the `opentelemetry-proto`
package's message classes) behind http.server: it accepts
`POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf
(optionally gzip-compressed), answers an empty `ExportTraceServiceResponse`,
and keeps the spans for the test to look at. It can also refuse (any
status), answer slowly, or only count what arrives (the benchmark).
"""
from __future__ import annotations

import dataclasses
import gzip
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

PATH = "/v1/traces"


@dataclasses.dataclass
class Span:
    service: str
    trace_id: str          # 32 lower-case hex digits
    span_id: str           # 16
    parent_span_id: str    # 16, or "" for a root
    name: str
    kind: int              # opentelemetry.proto.trace.v1.Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int       # 0 unset, 1 ok, 2 error
    parent_is_remote: bool
    trace_state: str

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def __str__(self) -> str:
        return (f"{self.service}/{self.name} trace={self.trace_id[:8]} id={self.span_id[:8]} "
                f"parent={self.parent_span_id[:8] or '-'} {self.duration_ms:.3f} ms {self.attributes}")


def _value(v) -> object:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


# SpanFlags: bit 8 says whether bit 9 (the parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200


def parse(body: bytes) -> list[Span]:
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    spans = []
    for rs in req.resource_spans:
        service = next((str(_value(a.value)) for a in rs.resource.attributes
                        if a.key == "service.name"), "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                spans.append(Span(
                    service=service,
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    name=s.name,
                    kind=s.kind,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    status_code=s.status.code,
                    parent_is_remote=bool(s.flags & _HAS_IS_REMOTE and s.flags & _IS_REMOTE),
                    trace_state=s.trace_state,
                ))
    return spans


class OtlpReceiver:
    """Collects exported spans on 127.0.0.1 (a free port). status/delay set
    how it answers: 200 at once by default; keep=False only counts."""

    def __init__(self, status: int = 200, delay_s: float = 0.0, keep: bool = True):
        self.status = status
        self.delay_s = delay_s
        self.keep = keep
        self.requests = 0
        self.span_count = 0
        self.bytes = 0
        self.headers: list[dict[str, str]] = []
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """The base URL for `[tracing] otlp_endpoint`."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "OtlpReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if self.headers.get("content-encoding", "") == "gzip":
                    body = gzip.decompress(body)
                if self.path != PATH or self.headers.get("content-type") != "application/x-protobuf":
                    self._answer(404 if self.path != PATH else 415, b"")
                    return
                # Counting only (the benchmark) does not decode.
                spans = parse(body) if receiver.keep else []
                with receiver._lock:
                    receiver.requests += 1
                    receiver.bytes += length
                    receiver.span_count += len(spans)
                    if receiver.keep:
                        receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                        receiver._spans.extend(spans)
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                if receiver.status != 200:
                    self._answer(receiver.status, b"refused by the test")
                    return
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self._answer(200, out)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def wait_for(self, check: Callable[[list[Span]], bool], timeout: float = 10.0,
                 what: str = "spans") -> list[Span]:
        """The spans once check(spans) holds; fails with what arrived."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if check(spans):
                return spans
            if time.monotonic() > deadline:
                listing = "\n  ".join(str(s) for s in spans) or "(none)"
                raise AssertionError(f"no {what} within {timeout} s; received:\n  {listing}")
            time.sleep(0.05)


def by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for s in spans:
        out.setdefault(s.trace_id, []).append(s)
    return out


if __name__ == "__main__":
    # A receiver that discards (the benchmark runs it pinned beside the load
    # generator): prints its port, then serves until killed.
    import sys

    r = OtlpReceiver(keep=False).start()
    print(r.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        r.stop()
        sys.exit(0)

"""Request traces over OTLP/HTTP, checked in a real receiver (otlp_receiver.py,
built from the protocol's published definitions), and Server-Timing.

- One request gives its spans (request, receive, decode, cache, queue, batch,
  compute, encode, send) under one root, with their attributes; the queue
  and compute spans lie within the request and are the very measures
  Server-Timing reports.
- A spilled request is one trace across two nusad processes: the region's
  request span is the child of the main box's region-call span.
- The caller's traceparent/tracestate are continued (parent-based sampling);
  garbage in them is ignored and never echoed.
- At sample_ratio 0 a fast request is not exported, a slow (over slo_ms) or
  failed (5xx) one is.
- A collector that is down, refusing or slow fails no request; the lost
  spans are counted.
- Server-Timing on HTTP/1.1, HTTP/2 and HTTP/3, absent with
  server_timing = false.
"""
from __future__ import annotations

import re
import time

import pytest

import nusatest as nt
import spilltest as st
from h3client import h3_request
from otlp_receiver import OtlpReceiver, Span, by_trace

pytestmark = pytest.mark.timeout(180)

SERVER_KIND, CLIENT_KIND = 2, 3   # opentelemetry.proto.trace.v1.Span.SpanKind
ERROR = 2                         # Status.StatusCode
GIVEN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
GIVEN_PARENT = "00f067aa0ba902b7"
# Timestamps come from one clock, but the explicit spans' ends are converted
# from the monotonic clock: allow this much disagreement at the edges.
SLACK_NS = 200_000


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def tracing(receiver: OtlpReceiver, **extra) -> dict:
    return {"tracing": {"otlp_endpoint": receiver.endpoint, "sample_ratio": 1.0, **extra}}


def cached_model(**extra) -> dict:
    return {**nt.batching(max_batch_size=8, max_queue_delay_us=500), "cache": {"enabled": True}, **extra}


@pytest.fixture(scope="module")
def traced(tmp_path_factory, receiver):
    """Every request sampled (ratio 1.0), the cache on."""
    s = nt.start_server("traced", tmp_path_factory.mktemp("nusad-traced"),
                        {nt.MODEL: ((1,), cached_model())},
                        {**st.ROOMY_LIMITS, **tracing(receiver, service_name="traced")})
    yield s
    s.stop_checked()


@pytest.fixture(scope="module")
def tail(tmp_path_factory, receiver):
    """sample_ratio 0: only what the tail decision keeps. `slo` answers in
    over its 1 ms objective (its batching window alone is 20 ms)."""
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=8, max_queue_delay_us=50_000)),
              "slo": ((1,), {"slo_ms": 1, **nt.batching(max_batch_size=8, max_queue_delay_us=20_000)})}
    s = nt.start_server("tail", tmp_path_factory.mktemp("nusad-tail"), models,
                        {**st.ROOMY_LIMITS, **tracing(receiver, sample_ratio=0.0, service_name="tail")})
    yield s
    s.stop_checked()


def infer(server: nt.NusadServer, row: int = 0, headers: dict | None = None, model: str = nt.MODEL,
          parameters: dict | None = None) -> nt.Response:
    x, _ = nt.golden_rows([row])
    body, h = nt.infer_request({nt.INPUT: x}, outputs=[nt.OUTPUT], parameters=parameters)
    return nt.https1(server, "POST", nt.infer_path(model), body, {**h, **(headers or {})})


def server_timing(resp: nt.Response) -> dict[str, float]:
    """Server-Timing's durations by name, in milliseconds."""
    value = resp.headers.get("server-timing")
    assert value, f"no Server-Timing in {resp.headers}"
    out = {}
    for part in value.split(","):
        m = re.fullmatch(r"\s*([a-z]+);dur=([0-9.]+)\s*", part)
        assert m, f"Server-Timing part {part!r} of {value!r}"
        out[m.group(1)] = float(m.group(2))
    return out


def trace_of(receiver: OtlpReceiver, service: str, url_path: str, names: set[str],
             after_ns: int, timeout: float = 10.0, root: dict | None = None) -> dict[str, Span]:
    """The spans, by name, of the trace of service whose root is a request
    to url_path that started after after_ns (with the root attributes
    given) and that has names."""
    want = root or {}

    def find(spans):
        for _, group in by_trace([s for s in spans if s.service == service]).items():
            roots = [s for s in group if s.name == "request" and s.start_ns >= after_ns
                     and s.attributes.get("url.path") == url_path
                     and all(s.attributes.get(k) == v for k, v in want.items())]
            if roots and names <= {s.name for s in group}:
                return group
        return None
    receiver.wait_for(lambda spans: find(spans) is not None, timeout,
                      f"{service} trace of {url_path} with {sorted(names)}")
    group = find(receiver.spans())
    seen = [s.name for s in group]
    assert len(seen) == len(set(seen)), f"a span twice in one request: {seen}"
    return {s.name: s for s in group}


def within(child: Span, root: Span, slack_ns: int = SLACK_NS) -> None:
    assert root.start_ns - slack_ns <= child.start_ns <= child.end_ns <= root.end_ns + slack_ns, \
        f"{child.name} [{child.start_ns}, {child.end_ns}] outside the request [{root.start_ns}, {root.end_ns}]"


def now_ns() -> int:
    return time.time_ns() - 1_000_000


# --------------------------------------------------------------------------


def test_one_request_gives_its_spans_with_attributes_and_the_timings_add_up(traced, receiver):
    t0 = now_ns()
    r = infer(traced, 1)
    assert r.status == 200, r
    path = nt.infer_path()
    names = {"request", "receive", "decode", "cache", "queue", "batch", "compute", "encode", "send"}
    spans = trace_of(receiver, "traced", path, names, t0)
    root = spans["request"]
    assert root.parent_span_id == "" and root.kind == SERVER_KIND, root
    for name in names - {"request"}:
        assert spans[name].parent_span_id == root.span_id, spans[name]
        within(spans[name], root)
    assert root.attributes["http.request.method"] == "POST"
    assert root.attributes["network.protocol.version"] == "1.1"
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["nusa.model"] == nt.MODEL
    assert root.attributes["nusa.served_by"] == "local"
    x, _ = nt.golden_rows([1])
    body, _ = nt.infer_request({nt.INPUT: x}, outputs=[nt.OUTPUT])
    assert spans["receive"].attributes["nusa.bytes"] == len(body)
    assert spans["receive"].attributes["network.protocol.version"] == "1.1"
    assert spans["send"].attributes["nusa.bytes"] == len(r.body)
    assert spans["cache"].attributes["nusa.cache.result"] == "miss"
    assert spans["batch"].attributes["nusa.batch.size"] == 1
    assert spans["batch"].attributes["nusa.batch.instance"] == 0
    assert spans["compute"].attributes["nusa.engine"] == "onnxruntime"
    assert spans["compute"].attributes["nusa.model.version"] == 1
    # In order: the lookup, the wait, the batch (whose engine run ends it), the answer.
    q, b, c = spans["queue"], spans["batch"], spans["compute"]
    assert spans["cache"].end_ns <= q.start_ns + SLACK_NS
    assert q.end_ns <= b.start_ns + SLACK_NS and c.end_ns <= b.end_ns + SLACK_NS
    assert b.end_ns <= spans["encode"].start_ns + SLACK_NS <= spans["send"].start_ns + 2 * SLACK_NS
    # Server-Timing reports the same measures the spans were made of, and
    # its parts fit in its total, which fits in the request span.
    timing = server_timing(r)
    assert set(timing) == {"cache", "queue", "compute", "total"}, timing
    assert abs(timing["queue"] - q.duration_ms) < 0.01, (timing, q)
    assert abs(timing["compute"] - b.duration_ms) < 0.01, (timing, b)
    assert abs(timing["cache"] - spans["cache"].duration_ms) < 0.01, (timing, spans["cache"])
    assert timing["cache"] + timing["queue"] + timing["compute"] <= timing["total"] + 0.01, timing
    assert timing["total"] <= root.duration_ms + 0.01, (timing, root)

    # The same request again: a cache hit, with no queue or compute.
    t1 = now_ns()
    again = infer(traced, 1)
    assert again.status == 200 and nt.served_by(again) == "cache"
    hit = trace_of(receiver, "traced", path, {"request", "cache", "send"}, t1)
    assert hit["cache"].attributes["nusa.cache.result"] == "hit"
    assert hit["cache"].attributes["nusa.cache.tier"] == "memory"
    assert not {"queue", "batch", "compute"} & set(hit), sorted(hit)
    assert set(server_timing(again)) == {"cache", "total"}, again.headers


def test_the_callers_trace_context_is_continued(traced, receiver):
    t0 = now_ns()
    tp = f"00-{GIVEN_TRACE}-{GIVEN_PARENT}-01"
    r = infer(traced, 2, {"traceparent": tp, "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"})
    assert r.status == 200, r
    spans = trace_of(receiver, "traced", nt.infer_path(), {"request", "compute"}, t0)
    root = spans["request"]
    assert root.trace_id == GIVEN_TRACE and root.parent_span_id == GIVEN_PARENT, root
    assert root.parent_is_remote
    assert root.trace_state == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    # Never sent back: a trace context is for callees, not callers.
    assert "traceparent" not in r.headers and "tracestate" not in r.headers, r.headers


def test_garbage_trace_context_is_ignored_and_never_echoed(traced, receiver):
    garbage = {"traceparent": "00-<script>-zz-01", "tracestate": "k=<v>!,=="}
    upper = "4BF92F3577B34DA6A3CE929D0E0E47FF"  # hex, but upper case: invalid
    for tp in [garbage["traceparent"], f"00-{'0' * 32}-{GIVEN_PARENT}-01",
               f"00-{upper}-{GIVEN_PARENT}-01"]:
        t0 = now_ns()
        r = infer(traced, 3, {"traceparent": tp, "tracestate": garbage["tracestate"]})
        assert r.status == 200, r
        spans = trace_of(receiver, "traced", nt.infer_path(), {"request", "cache", "send"}, t0)
        root = spans["request"]
        # A trace of its own, with no parent and no trace state.
        assert root.parent_span_id == "" and root.trace_id not in (upper.lower(), "0" * 32), root
        assert root.trace_state == "", root
        echoed = [k for k, v in r.headers.items()
                  if k in ("traceparent", "tracestate") or "script" in v or "zz" in v]
        assert not echoed, r.headers


def test_ratio_zero_keeps_only_the_slow_the_failed_and_the_callers_sampled(tail, receiver):
    before = nt.scrape_metrics(tail)
    t0 = now_ns()
    fast = infer(tail, 0)
    assert fast.status == 200
    # Waiting for a 50 ms batching window, a 100 us timeout expires: 504.
    failed = infer(tail, 1, parameters={"timeout": 100})
    assert failed.status == 504, failed
    slow = infer(tail, 2, model="slo")
    assert slow.status == 200
    unsampled = infer(tail, 3, {"traceparent": f"00-{GIVEN_TRACE[:-1]}1-{GIVEN_PARENT}-00"})
    sampled = infer(tail, 4, {"traceparent": f"00-{GIVEN_TRACE[:-1]}2-{GIVEN_PARENT}-01"})
    assert unsampled.status == sampled.status == 200

    bad = trace_of(receiver, "tail", nt.infer_path(), {"request", "send"}, t0,
                   root={"http.response.status_code": 504})
    assert bad["request"].status_code == ERROR
    late = trace_of(receiver, "tail", nt.infer_path("slo"), {"request", "queue", "compute"}, t0)
    assert late["request"].attributes["nusa.slo_ms"] == 1
    assert late["request"].duration_ms > 1
    kept = trace_of(receiver, "tail", nt.infer_path(), {"request", "compute"}, t0,
                    root={"http.response.status_code": 200})
    assert kept["request"].trace_id == f"{GIVEN_TRACE[:-1]}2", kept["request"]
    # Give the exporter its batching window, then: nothing else came.
    time.sleep(1.0)
    roots = [s for s in receiver.spans() if s.service == "tail" and s.name == "request"
             and s.start_ns >= t0]
    assert len(roots) == 3, "\n".join(str(s) for s in roots)
    assert all(s.trace_id != f"{GIVEN_TRACE[:-1]}1" for s in receiver.spans())
    after = nt.scrape_metrics(tail)
    delta = {v: nt.metric_sum(after, "nusa_trace_traces_total", verdict=v)
             - nt.metric_sum(before, "nusa_trace_traces_total", verdict=v)
             for v in ("sampled", "slow", "failed", "dropped")}
    assert delta["failed"] == 1 and delta["slow"] == 1 and delta["sampled"] == 1, delta
    assert delta["dropped"] >= 2, delta   # the fast one, the unsampled one (and the metric scrapes)
    assert "server-timing" in fast.headers and "server-timing" in failed.headers


def test_a_spilled_request_is_one_trace_across_both_boxes(tmp_path, receiver):
    region = nt.start_server("region", tmp_path / "region", {nt.MODEL: ((1,), nt.batching(8, 500))},
                             {**st.ROOMY_LIMITS, **tracing(receiver, service_name="region")})
    try:
        placed = {**nt.batching(8, 500), "placement": "region"}
        main = nt.start_server("main", tmp_path / "main", {nt.MODEL: ((1,), placed)},
                               {**st.ROOMY_LIMITS, **tracing(receiver, service_name="main"),
                                "regions": [st.region_entry("sg-1", region)]})
        try:
            t0 = now_ns()
            r = infer(main, 5, {"traceparent": f"00-{GIVEN_TRACE[:-1]}5-{GIVEN_PARENT}-01",
                                "tracestate": "congo=t61rcWkgMzE"})
            assert r.status == 200 and nt.served_by(r) == "cloud:sg-1", r
            ours = trace_of(receiver, "main", nt.infer_path(), {"request", "region", "send"}, t0)
            # The region is asked for the version main resolved.
            theirs = trace_of(receiver, "region", nt.infer_path(nt.MODEL, 1),
                              {"request", "receive", "queue", "batch", "compute", "send"}, t0)
            call, far = ours["region"], theirs["request"]
            assert ours["request"].trace_id == call.trace_id == far.trace_id == f"{GIVEN_TRACE[:-1]}5"
            assert call.parent_span_id == ours["request"].span_id and call.kind == CLIENT_KIND
            assert call.attributes["nusa.region"] == "sg-1"
            assert call.attributes["nusa.try"] == 1
            assert call.attributes["http.response.status_code"] == 200
            assert call.attributes["nusa.outcome"] == "ok"
            # The region's request is the child of the call that sent it,
            # and its spans lie within that call.
            assert far.parent_span_id == call.span_id and far.parent_is_remote, (far, call)
            assert far.trace_state == "congo=t61rcWkgMzE", far
            for s in theirs.values():
                if s is not far:
                    assert s.parent_span_id == far.span_id, s
                # Two processes: their ends are taken at slightly different points.
                within(s, call, slack_ns=1_000_000)
            assert not {"queue", "compute"} & set(ours), sorted(ours)
            timing = server_timing(r)
            assert set(timing) == {"region", "total"}, timing
            assert abs(timing["region"] - call.duration_ms) < 0.2, (timing, call)
        finally:
            main.stop_checked()
    finally:
        region.stop_checked()


def test_a_collector_down_refusing_or_slow_fails_no_request(tmp_path):
    refusing = OtlpReceiver(status=503).start()
    slow = OtlpReceiver(delay_s=3.0).start()
    closed = nt.free_port()  # nothing listens there
    servers = []
    try:
        for name, endpoint, extra in [("down", f"http://127.0.0.1:{closed}", {}),
                                      ("refusing", refusing.endpoint, {}),
                                      ("slow", slow.endpoint, {"queue_spans": 16,
                                                               "export_timeout_ms": 2000})]:
            servers.append(nt.start_server(
                name, tmp_path / name, {nt.MODEL: ((1,), nt.batching(8, 200))},
                {**st.ROOMY_LIMITS, "tracing": {"otlp_endpoint": endpoint, "sample_ratio": 1.0,
                                                **extra}}))
        for s in servers:
            took = []
            for i in range(40):
                started = time.monotonic()
                assert infer(s, i % 8).status == 200, s.name
                took.append(time.monotonic() - started)
            # Each a few ms: none waited on the collector (an export's
            # timeout is 2 s, the slow one answers in 3 s).
            assert max(took) < 1.0, (s.name, sorted(took)[-5:])
        reasons = {"down": "export_failed", "refusing": "export_failed", "slow": "queue_full"}
        for s in servers:
            nt.wait_for_metrics(s, lambda m, s=s: _dropped(m, reasons[s.name]), timeout=15)
            assert s.alive()
        assert refusing.requests > 0
    finally:
        for s in servers:
            s.stop_checked()
        refusing.stop()
        slow.stop()


def _dropped(samples, reason: str) -> None:
    n = nt.metric_sum(samples, "nusa_trace_spans_dropped_total", reason=reason)
    assert n > 0, f"nusa_trace_spans_dropped_total{{reason={reason!r}}} is {n}"


def test_server_timing_on_every_protocol_and_off_when_turned_off(tmp_path, traced, receiver):
    t0 = now_ns()
    x, _ = nt.golden_rows([6])
    body, headers = nt.infer_request({nt.INPUT: x}, outputs=[nt.OUTPUT])
    for http in ("1.1", "2"):
        r = nt.curl(traced, "POST", nt.infer_path(), http=http, body=body, headers=headers)
        assert r.status == 200, r
        assert {"total"} < set(server_timing(r)), (http, r.headers)
    h3 = h3_request(traced, "POST", nt.infer_path(), body, headers)
    assert h3.status == 200
    assert {"total"} < set(server_timing(h3)), h3.headers
    # Each protocol's request is traced the same way.
    for version in ("1.1", "2", "3"):
        spans = trace_of(receiver, "traced", nt.infer_path(), {"request", "receive", "decode", "send"},
                         t0, root={"network.protocol.version": version})
        assert spans["receive"].attributes["nusa.bytes"] == len(body), spans["receive"]
    # Health and errors too, with the total alone.
    ready = nt.https1(traced, "GET", "/v2/health/ready")
    assert set(server_timing(ready)) == {"total"}, ready.headers
    missing = nt.https1(traced, "POST", nt.infer_path("no-such-model"), body, headers)
    assert missing.status == 404 and "total" in server_timing(missing)

    # No tracing at all: the header is still there by default...
    plain = nt.start_server("plain", tmp_path / "plain", {nt.MODEL: ((1,), nt.batching(8, 200))},
                            st.ROOMY_LIMITS)
    off = None
    try:
        r = infer(plain, 0)
        assert r.status == 200 and {"queue", "compute", "total"} <= set(server_timing(r)), r.headers
        # ...and none with server_timing = false, on any answer.
        off = nt.start_server("off", tmp_path / "off", {nt.MODEL: ((1,), nt.batching(8, 200))},
                              {**st.ROOMY_LIMITS, "tracing": {"server_timing": False}})
        for resp in [infer(off, 0), nt.https1(off, "GET", "/v2/health/ready"),
                     nt.curl(off, "POST", nt.infer_path(), http="2", body=body, headers=headers),
                     h3_request(off, "POST", nt.infer_path(), body, headers)]:
            assert resp.status == 200 and "server-timing" not in resp.headers, resp.headers
    finally:
        plain.stop_checked()
        if off is not None:
            off.stop_checked()

"""Prometheus metrics on the plain-HTTP metrics port."""
import pytest

import nusatest as nt
from h3client import h3_request

pytestmark = pytest.mark.timeout(120)

PROTOCOLS = ("http1", "http2", "http3")


def infer_each_protocol(server) -> None:
    x, expected = nt.golden_rows([5])
    body = nt.json_infer_body(x)
    nt.assert_infer_ok(nt.https1(server, "POST", nt.infer_path(), body, nt.JSON_HEADERS), expected)
    r = nt.curl(server, "POST", nt.infer_path(), http="2", body=body, headers=nt.JSON_HEADERS)
    assert r.http_version == "2", f"curl --http2 got HTTP/{r.http_version}"
    nt.assert_infer_ok(r, expected)
    nt.assert_infer_ok(h3_request(server, "POST", nt.infer_path(), body, nt.JSON_HEADERS), expected)


def test_requests_total_by_protocol(server):
    infer_each_protocol(server)

    def check(samples):
        for proto in PROTOCOLS:
            n = nt.metric_sum(samples, "nusa_requests_total", model=nt.MODEL, outcome="ok",
                              protocol=proto)
            assert n >= 1, f'no nusa_requests_total{{model="{nt.MODEL}",outcome="ok",protocol="{proto}"}}'
        seen = {s.labels.get("protocol") for s in nt.select(samples, "nusa_requests_total")}
        assert seen <= set(PROTOCOLS), f"unexpected protocol labels {seen}"

    nt.wait_for_metrics(server, check)


def test_error_outcome_counted(server):
    before = nt.scrape_metrics(server)

    def errors(samples):
        return sum(s.value for s in nt.select(samples, "nusa_requests_total", model=nt.MODEL)
                   if s.labels.get("outcome") != "ok")

    x = nt.golden_rows([0])[0]
    r = nt.https1(server, "POST", nt.infer_path(), nt.json_infer_body(x, shape=[1, 3, 32, 31]),
                  nt.JSON_HEADERS)
    nt.assert_error(r, 400)

    def check(samples):
        assert errors(samples) > errors(before), "a 400 for tiny-cnn was not counted as an error outcome"

    nt.wait_for_metrics(server, check)


def test_duration_histogram_phases(server):
    infer_each_protocol(server)

    def check(samples):
        buckets = nt.select(samples, "nusa_request_duration_seconds_bucket", model=nt.MODEL)
        phases = {s.labels.get("phase") for s in buckets}
        assert {"queue", "compute", "total"} <= phases, f"phases {phases}"
        for phase in ("queue", "compute", "total"):
            count = nt.metric_sum(samples, "nusa_request_duration_seconds_count", model=nt.MODEL,
                                  phase=phase)
            assert count >= 1, f"no {phase} observations"
            inf = nt.bucket(samples, "nusa_request_duration_seconds", float("inf"),
                            model=nt.MODEL, phase=phase)
            assert inf == count, f"{phase}: +Inf bucket {inf} != count {count}"

    nt.wait_for_metrics(server, check)


def test_batch_size_and_queue_depth_exist(server):
    infer_each_protocol(server)

    def check(samples):
        assert nt.metric_sum(samples, "nusa_batch_size_count", model=nt.MODEL) >= 1
        nt.bucket(samples, "nusa_batch_size", 1.0, model=nt.MODEL)  # le="1" (or "1.0") exists
        depth = nt.select(samples, "nusa_queue_depth", model=nt.MODEL)
        assert depth, "no nusa_queue_depth gauge for tiny-cnn"
        assert all(s.value >= 0 for s in depth)

    nt.wait_for_metrics(server, check)

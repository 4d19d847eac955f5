"""Shared set-up for the spill-over tests (test_spill.py, test_region_faults.py).

The "main" nusad serves the slow model with one instance and batches of one,
so its capacity is low and known; a "region" is another nusad with the same
model name and version (no regions of its own), reached over HTTP/2 + TLS and
verified with the region's generated CA.

The latency objective is derived from what the region answers in when idle
(the client-side time of one request, `row_s`): slo = SLO_ROWS x row_s. With
LOAD_CLIENTS closed-loop clients, local alone holds about LOAD_CLIENTS
requests in line (so it misses the objective), while main and region
together keep both queues under it (slo > LOAD_CLIENTS x row / 2).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Mapping

import numpy as np

import loadgen
import nusatest as nt
import slowmodel as sm

SLOW = sm.NAME
PINNED = "pinned-mlp"      # the same model under another name, residency = "local"
ROOMY_LIMITS = {"limits": {"max_body_bytes": 64 << 20}}
LOAD_CLIENTS = 16
SLO_ROWS = 11
MIN_SLO_MS = 25
POOL = 64                  # distinct input rows cycled through by the load
RAMP_S = 0.5               # clients join over this time rather than in one burst


def model_config(slo_ms: int | None = None, residency: str | None = None,
                 max_queue_size: int = 64) -> dict:
    tables: dict = {}
    if slo_ms is not None:
        tables["slo_ms"] = int(slo_ms)
    if residency is not None:
        tables["residency"] = residency
    tables.update(nt.batching(max_batch_size=1, max_queue_delay_us=0, max_queue_size=max_queue_size,
                              instances=1))
    return tables


def start_region(workdir: Path, slow: sm.SlowModel, name: str = "region",
                 models: tuple[str, ...] = (SLOW, PINNED),
                 model_bytes: bytes | None = None, ready_path: str | None = None) -> nt.NusadServer:
    """A region nusad: the slow model under each name in models, version 1."""
    data = slow.model if model_bytes is None else model_bytes
    return nt.start_server(name, workdir, {m: ((1,), model_config(max_queue_size=256)) for m in models},
                           ROOMY_LIMITS, model_files={m: data for m in models}, ready_path=ready_path)


def region_entry(name: str, server: nt.NusadServer, url: str | None = None, **extra) -> dict:
    """A [[regions]] table for server (url overrides the address, e.g. a proxy's)."""
    entry = {"name": name, "url": url or f"https://{server.authority}", "ca": str(server.ca_path),
             "timeout_ms": 2000, "requests_per_hour": 0, "bytes_per_hour": 0}
    entry.update(extra)
    return entry


def start_main(workdir: Path, slow: sm.SlowModel, regions: list[dict], *, slo_ms: int,
               spill: Mapping | None = None, models: Mapping[str, dict] | None = None,
               name: str = "main", extra: Mapping | None = None) -> nt.NusadServer:
    spill_table = {"enabled": True, "max_tries": 2, "local_only_clients": [], "probe_interval_ms": 5000}
    spill_table.update(spill or {})
    config: dict = dict(ROOMY_LIMITS)
    config.update(extra or {})
    config["spill"] = spill_table
    config["regions"] = regions
    if models is None:
        models = {SLOW: model_config(slo_ms)}
    return nt.start_server(name, workdir, {m: ((1,), cfg) for m, cfg in models.items()}, config,
                           model_files={m: slow.model for m in models})


@dataclasses.dataclass
class Workload:
    """POOL distinct rows with their expected outputs, as ready-made request bodies."""
    slow: sm.SlowModel
    bodies: list[tuple[bytes, dict]]
    expected: np.ndarray  # [POOL, 256]

    @classmethod
    def make(cls, slow: sm.SlowModel, seed: int = 8, parameters: Mapping | None = None) -> "Workload":
        xs = sm.rows(POOL, seed)
        bodies = [nt.infer_request({sm.INPUT: xs[i:i + 1]}, outputs=[sm.OUTPUT],
                                   parameters=parameters) for i in range(POOL)]
        return cls(slow, bodies, slow.expected(xs))

    def maker(self, model: str = SLOW, extra_headers: Mapping[str, str] | None = None):
        path = nt.infer_path(model)

        def make(client: int, i: int) -> loadgen.Request:
            j = (client * 7 + i) % POOL
            body, headers = self.bodies[j]
            if extra_headers:
                headers = {**headers, **extra_headers}
            return path, body, headers, self.expected[j:j + 1]

        return make


def warm_up(server: nt.NusadServer, work: Workload, model: str = SLOW, n: int = 12) -> loadgen.Summary:
    """Sequential requests: the scheduler learns its service time (no prediction
    before the first batch), and the connection paths are exercised."""
    s = loadgen.sequential(server, work.maker(model), n, sm.OUTPUT)
    bad = [r.error for r in s.results if r.error] + [f"status {r.status}" for r in s.results
                                                     if r.status != 200]
    assert not bad, f"warm-up on {server.name} failed: {bad[:5]}"
    return s


def measure_row_s(region: nt.NusadServer, work: Workload) -> float:
    """Client-side time of one request on an idle server (median)."""
    warm_up(region, work, n=5)
    s = loadgen.sequential(region, work.maker(), 30, sm.OUTPUT)
    return float(np.median([r.latency_s for r in s.results]))


def slo_for(row_s: float) -> int:
    return max(MIN_SLO_MS, int(round(SLO_ROWS * row_s * 1000)))


def requests_received(samples, model: str) -> float:
    """What a nusad counted as received for model (all outcomes and protocols)."""
    return nt.metric_sum(samples, "nusa_requests_total", model=model)


def spilled(samples, model: str, region: str | None = None) -> float:
    labels = {"model": model} | ({"region": region} if region else {})
    return nt.metric_sum(samples, "nusa_spilled_total", **labels)


def assert_no_errors(summary: loadgen.Summary, what: str, allow_503: bool) -> None:
    bad = summary.errors
    assert not bad, f"{what}: {len(bad)} bad answers, first: {[r.error for r in bad[:5]]}"
    if not allow_503:
        not_ok = {k: v for k, v in summary.statuses().items() if k != 200}
        assert not not_ok, f"{what}: statuses other than 200: {not_ok} ({summary.describe()})"
    else:
        odd = {k: v for k, v in summary.statuses().items() if k not in (200, 503)}
        assert not odd, f"{what}: statuses other than 200/503: {odd}"


def served_cloud(summary: loadgen.Summary) -> int:
    return summary.served("cloud:")


def settle(seconds: float = 0.3) -> None:
    time.sleep(seconds)

"""Bounded closed-loop load for the spill tests: N client threads, each with its
own keep-alive HTTP/1.1 TLS connection, send requests back to back for a
fixed time and check every answer. Two cores: keep N and the duration small.
"""
from __future__ import annotations

import dataclasses
import http.client
import ssl
import threading
import time
from typing import Callable, Mapping

import numpy as np

import nusatest as nt

# One request: (path, body, headers, expected output or None when not checked).
Request = tuple[str, bytes, Mapping[str, str], "np.ndarray | None"]


@dataclasses.dataclass
class Result:
    started: float      # monotonic
    latency_s: float
    status: int         # 0: transport error
    served_by: str
    retry_after: str | None
    error: str | None   # wrong answer, bad error body, transport error


@dataclasses.dataclass
class Summary:
    results: list[Result]
    duration_s: float

    @property
    def n(self) -> int:
        return len(self.results)

    def count(self, pred: Callable[[Result], bool]) -> int:
        return sum(1 for r in self.results if pred(r))

    @property
    def errors(self) -> list[Result]:
        return [r for r in self.results if r.error is not None]

    def served(self, prefix: str) -> int:
        return self.count(lambda r: r.status == 200 and r.served_by.startswith(prefix))

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def by_served(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            if r.status == 200:
                out[r.served_by] = out.get(r.served_by, 0) + 1
        return out

    def percentile_ms(self, q: float, pred: Callable[[Result], bool] = lambda r: True) -> float:
        lat = [r.latency_s for r in self.results if pred(r)]
        return float(np.percentile(lat, q) * 1000) if lat else float("nan")

    def timeline(self, bin_s: float = 0.5) -> str:
        """Answers per time bin by served-by (and 503s), e.g. to see spilling stop."""
        if not self.results:
            return "(no requests)"
        t0 = self.results[0].started
        bins: dict[int, dict[str, int]] = {}
        for r in self.results:
            key = r.served_by if r.status == 200 else str(r.status)
            b = bins.setdefault(int((r.started - t0) / bin_s), {})
            b[key] = b.get(key, 0) + 1
        return " | ".join(f"{i * bin_s:.1f}s " + ",".join(f"{k or '-'}:{v}" for k, v in sorted(b.items()))
                          for i, b in sorted(bins.items()))

    def describe(self) -> str:
        ok = lambda r: r.status == 200  # noqa: E731
        per = "; ".join(
            f"{k or '-'} p50 {self.percentile_ms(50, lambda r, k=k: ok(r) and r.served_by == k):.1f} / "
            f"p99 {self.percentile_ms(99, lambda r, k=k: ok(r) and r.served_by == k):.1f} ms"
            for k in sorted(self.by_served()))
        return (f"{self.n} requests in {self.duration_s:.1f} s ({self.n / self.duration_s:.0f}/s); "
                f"status {self.statuses()}; served-by {self.by_served()}; "
                f"latency of 200s p50 {self.percentile_ms(50, ok):.1f} ms, "
                f"p99 {self.percentile_ms(99, ok):.1f} ms, max {self.percentile_ms(100, ok):.1f} ms"
                + (f" ({per})" if len(self.by_served()) > 1 else ""))


def check_answer(resp: nt.Response, output: str, expected: np.ndarray | None) -> str | None:
    """None when resp is a correct 200 (or a proper 503 with Retry-After, or a
    429 with Retry-After naming a key's limit), else why not. Which statuses
    a test expects is the test's to check (spilltest.assert_no_errors)."""
    if resp.status == 503:
        if not resp.headers.get("retry-after"):
            return f"503 without Retry-After: {resp}"
        return None
    if resp.status == 429:
        try:
            limit = resp.json().get("limit")
        except ValueError:
            limit = None
        if not resp.headers.get("retry-after") or not limit:
            return f"429 without Retry-After or a named limit: {resp}"
        return None
    if resp.status != 200:
        return f"status {resp.status}: {resp.body[:300]!r}"
    if expected is None:
        return None
    try:
        _, arrays = nt.decode_infer_response(resp)
        actual = arrays[output]
        if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=1e-4, atol=1e-5):
            diff = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else "shape"
            return f"wrong answer (served-by {nt.served_by(resp)!r}, max diff {diff})"
    except (AssertionError, KeyError, ValueError) as e:
        return f"undecodable answer: {e}"
    return None


def _retry_after_s(resp: nt.Response) -> float:
    try:
        return max(0.0, float(resp.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


class _Conn:
    def __init__(self, server: nt.NusadServer, timeout: float):
        self.server, self.timeout = server, timeout
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> nt.Response:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection(self.server.host, self.server.port,
                                                        timeout=self.timeout,
                                                        context=self.server.ssl_context())
            try:
                self.conn.request("POST", path, body=body, headers=dict(headers))
                resp = self.conn.getresponse()
                data = resp.read()
                out = nt.Response(resp.status, nt.join_headers(resp.getheaders()), data, "1.1")
                if resp.will_close:
                    self.close()
                return out
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A keep-alive connection the server closed: one fresh retry.
                self.close()
                if attempt:
                    raise e
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def closed_loop(server: nt.NusadServer, make: Callable[[int, int], Request], *, clients: int,
                duration_s: float, output: str, timeout: float = 30.0,
                on_tick: Callable[[], None] | None = None, backoff_503_s: float = 0.05,
                ramp_s: float = 0.0) -> Summary:
    """`clients` threads send make(client, i) back to back for duration_s.

    After a 503 a client waits min(Retry-After, backoff_503_s) before its next
    request: a bounded stand-in for honouring Retry-After, so that fast 503s do
    not turn into a retry storm that eats the two cores.
    on_tick, if given, runs in the calling thread about every 100 ms while the
    load runs (to watch metrics). ramp_s spreads the clients' first requests
    over that time (client c starts at c * ramp_s / clients) instead of all at
    once.
    """
    results: list[Result] = []
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + duration_s
    barrier = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        conn = _Conn(server, timeout)
        mine: list[Result] = []
        try:
            barrier.wait(timeout=30)
            if ramp_s > 0:
                time.sleep(c * ramp_s / clients)
            i = 0
            while time.monotonic() < deadline:
                path, body, headers, expected = make(c, i)
                i += 1
                t0 = time.monotonic()
                try:
                    resp = conn.post(path, body, headers)
                except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                    conn.close()
                    mine.append(Result(t0, time.monotonic() - t0, 0, "", None, f"transport: {e!r}"))
                    continue
                lat = time.monotonic() - t0
                mine.append(Result(t0, lat, resp.status, nt.served_by(resp),
                                   resp.headers.get("retry-after"),
                                   check_answer(resp, output, expected)))
                if resp.status in (429, 503):
                    time.sleep(min(_retry_after_s(resp), backoff_503_s))
        finally:
            conn.close()
            with lock:
                results.extend(mine)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    start = time.monotonic()
    while any(t.is_alive() for t in threads):
        if on_tick is not None and time.monotonic() < deadline:
            on_tick()
        time.sleep(0.1)
        if time.monotonic() > deadline + timeout + 30:
            raise AssertionError("load clients did not finish")
    for t in threads:
        t.join()
    return Summary(sorted(results, key=lambda r: r.started), time.monotonic() - start)


def sequential(server: nt.NusadServer, make: Callable[[int, int], Request], n: int,
               output: str) -> Summary:
    """n requests one after another on one connection (warm-up, baseline latency)."""
    conn = _Conn(server, 30)
    results = []
    t_start = time.monotonic()
    try:
        for i in range(n):
            path, body, headers, expected = make(0, i)
            t0 = time.monotonic()
            resp = conn.post(path, body, headers)
            results.append(Result(t0, time.monotonic() - t0, resp.status, nt.served_by(resp),
                                  resp.headers.get("retry-after"),
                                  check_answer(resp, output, expected)))
    finally:
        conn.close()
    return Summary(results, time.monotonic() - t_start)

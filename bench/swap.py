#!/usr/bin/env python3
"""Hot swaps under load (issue 13): latency while a model is reloaded every
K seconds against the same load without reloads, failed requests (must be
none), load-call durations, and nusad's memory after 1 swap against after
many. Release build of nusad; MLServer 1.7.1 (the inference-path peer of
bench/run.py) measured the same way when its venv is there.

    .venv/bin/python bench/swap.py [--quick] [--no-mlserver] [--out DIR]

Load: open loop over HTTP/1.1 keep-alive (TLS for nusad, plain HTTP for
MLServer, which has no TLS of its own), N client threads in this process
sending at a fixed total rate well under capacity, each request scheduled
in advance; latency is measured from the scheduled send time (so a stall is
not hidden by the client waiting: no coordinated omission). The run
alternates a baseline period (no swaps) and a swap period of the same
length (a reload every K seconds), `rounds` times, under one continuous
load. Every answer is checked against the weights of the version that
computed it; any failed or wrong answer makes the run exit non-zero. No
figure is asserted: the numbers are reported.

The model: x [batch, 1024] -> `depth` x (MatMul 1024x1024, Tanh) -> MatMul
1024x16 -> y, 16 MiB of weights at depth 4 (enough that a load takes a
noticeable time). nusad: version 2 appears (other weights) and is loaded,
then disappears and version 1 is loaded again (`versions = "latest"`), via
`POST /v2/repository/models/{m}/load` on the admin listener, as
tests/integration/test_model_lifecycle.py does. MLServer: model.onnx is
replaced by the other weights and the same repository call reloads it
(MLServer loads the new model before it unloads the old one).

Memory: RSS (VmRSS of the server's processes) after the first swap and
after swap 100 (quick: 20), both under the same load, each the lowest of
samples over 2 s taken 2 s after the swap.

`scripts/bench --quick` runs the quick mode (nusad only, ~40 s) as section 6
of bench/run.py's report; standalone, the full mode writes
bench/results/swap-<date>.md.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procstat  # noqa: E402
from benchlib import ROOT, nt, pin, use_release_build  # noqa: E402

MODEL = "swapbench"
DIM, OUT_DIM = 1024, 16
ROWS = 8  # distinct request rows; answers checked against precomputed outputs
SETTLE_S = 2.0


@dataclass
class Mode:
    quick: bool
    rounds: int
    period_s: float  # each baseline and each swap period
    every_s: float  # K: one swap every K seconds in a swap period
    rate: float  # requests per second, all client threads together
    threads: int
    mem_swaps: int  # RSS after 1 swap vs after this many
    depth: int

    @staticmethod
    def make(quick: bool) -> "Mode":
        if quick:
            return Mode(True, rounds=1, period_s=8, every_s=1.0, rate=100, threads=4, mem_swaps=20, depth=4)
        return Mode(False, rounds=3, period_s=30, every_s=2.0, rate=100, threads=4, mem_swaps=100, depth=4)

    def describe(self) -> str:
        return (f"{self.rounds} round(s) of a {self.period_s:g} s baseline period then a {self.period_s:g} s "
                f"swap period (one reload every {self.every_s:g} s), under one continuous open-loop load of "
                f"{self.rate:g} req/s from {self.threads} HTTP/1.1 keep-alive client threads; memory: RSS "
                f"after 1 swap vs after {self.mem_swaps}")


# --------------------------------------------------------------------------
# The model and its answers


def weights(version: int, depth: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1000 + version)
    scale = 1.5 / np.sqrt(DIM)
    ws = [(rng.standard_normal((DIM, DIM)) * scale).astype(np.float32) for _ in range(depth)]
    ws.append((rng.standard_normal((DIM, OUT_DIM)) / np.sqrt(DIM)).astype(np.float32))
    return ws


def build_model(ws: list[np.ndarray]) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, prev = [], [], "x"
    for i, w in enumerate(ws[:-1]):
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"h{i}"])]
        prev = f"h{i}"
    inits.append(numpy_helper.from_array(ws[-1], "w_out"))
    nodes.append(helper.make_node("MatMul", [prev, "w_out"], ["y"]))
    graph = helper.make_graph(nodes, MODEL,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT_DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="nusa-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference(ws: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    for w in ws[:-1]:
        h = np.tanh(h @ w)
    return (h @ ws[-1]).astype(np.float32)


@dataclass
class Versions:
    files: dict[int, bytes]
    rows: np.ndarray  # [ROWS, DIM]
    expected: dict[int, np.ndarray]  # version -> [ROWS, OUT_DIM]
    mib: float

    @staticmethod
    def make(depth: int) -> "Versions":
        rows = np.random.default_rng(7).standard_normal((ROWS, DIM)).astype(np.float32)
        files, expected = {}, {}
        for v in (1, 2):
            ws = weights(v, depth)
            files[v] = build_model(ws)
            expected[v] = reference(ws, rows)
        assert not np.allclose(expected[1], expected[2], atol=1e-3)
        return Versions(files, rows, expected, len(files[1]) / 2**20)

    def which(self, row: int, y: np.ndarray) -> int | None:
        """The version whose weights computed y for this row, or None."""
        for v, e in self.expected.items():
            if y.shape == (1, OUT_DIM) and np.allclose(y[0], e[row], rtol=1e-3, atol=1e-4):
                return v
        return None


# --------------------------------------------------------------------------
# The systems under test


class NusadTarget:
    name = "nusad"

    def __init__(self, workdir: Path, versions: Versions):
        self.versions = versions
        models = workdir / "models"
        self._put(models, 1, versions.files[1])
        config = nt.batching(max_batch_size=16, max_queue_delay_us=0, max_queue_size=1024)
        config["versions"] = "latest"
        (models / MODEL / "config.toml").write_text(nt.toml_dumps(config))
        self.models = models
        self.server = nt.NusadServer("swapbench", workdir, models, {"limits": {"max_body_bytes": 1 << 20}})
        # The malloc tuning the appliance's unit gives nusad (one home: the unit).
        self.server.env.update(unit_environment())
        self.bodies = [nt.infer_request({"x": versions.rows[i:i + 1]}, outputs=["y"]) for i in range(ROWS)]
        self.path = nt.infer_path(MODEL)
        self.swaps = 0

    @staticmethod
    def _put(models: Path, version: int, data: bytes) -> None:
        # Written beside and renamed in: the load call never sees half a file.
        staging = models / f".staging-{version}"
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "model.onnx").write_bytes(data)
        (models / MODEL).mkdir(parents=True, exist_ok=True)
        staging.rename(models / MODEL / str(version))

    def start(self) -> "NusadTarget":
        self.server.start()
        return self

    def stop(self) -> None:
        if not self.server.alive():
            raise RuntimeError(f"nusad exited during the benchmark:\n{self.server.log_tail()}")
        self.server.stop()

    def pids(self) -> list[int]:
        return [self.server.proc.pid]

    def connect(self) -> http.client.HTTPConnection:
        c = http.client.HTTPSConnection(self.server.host, self.server.port, timeout=30,
                                        context=self.server.ssl_context())
        c.connect()
        return c

    def infer(self, conn: http.client.HTTPConnection, row: int) -> None:
        body, headers = self.bodies[row]
        conn.request("POST", self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}: {data[:200]!r}")
        n = int(resp.getheader("Inference-Header-Content-Length"))
        header = json.loads(data[:n])
        y = np.frombuffer(data[n:], dtype=np.float32).reshape(1, OUT_DIM)
        v = self.versions.which(row, y)
        if v is None or str(v) != str(header.get("model_version")):
            raise RuntimeError(f"answer computed by version {v}, model_version {header.get('model_version')}")

    def swap(self) -> float:
        """One reload with a changed version; returns the load call's seconds."""
        self.swaps += 1
        if self.swaps % 2 == 1:
            self._put(self.models, 2, self.versions.files[2])
        else:
            shutil.rmtree(self.models / MODEL / "2")
        t0 = time.perf_counter()
        r = nt.admin(self.server, "POST", f"/v2/repository/models/{MODEL}/load")
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"swap {self.swaps}: load answered {r}")
        return dt


class MLServerTarget:
    name = "MLServer 1.7.1"

    def __init__(self, workdir: Path, versions: Versions):
        from peers.mlserver import MLServer

        self.versions = versions
        src = workdir / "v1.onnx"
        src.write_bytes(versions.files[1])
        self.http_port = nt.free_port()
        self.peer = MLServer(workdir / "mls", MODEL, src, self.http_port, nt.free_port(), nt.free_port(), False)
        self.model_file = workdir / "mls" / "models" / MODEL / "model.onnx"
        self.bodies = [json.dumps({"inputs": [{"name": "x", "shape": [1, DIM], "datatype": "FP32",
                                               "data": versions.rows[i].tolist()}]}).encode() for i in range(ROWS)]
        self.swaps = 0

    @staticmethod
    def available() -> bool:
        from peers.mlserver import VENV

        return (VENV / "bin/mlserver").exists()

    def start(self) -> "MLServerTarget":
        self.peer.start()
        return self

    def stop(self) -> None:
        self.peer.stop()

    def pids(self) -> list[int]:
        return self.peer.pids()

    def connect(self) -> http.client.HTTPConnection:
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        c.connect()
        return c

    def infer(self, conn: http.client.HTTPConnection, row: int) -> None:
        conn.request("POST", f"/v2/models/{MODEL}/infer", body=self.bodies[row],
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}: {data[:200]!r}")
        out = json.loads(data)["outputs"][0]
        y = np.asarray(out["data"], dtype=np.float32).reshape(1, OUT_DIM)
        if self.versions.which(row, y) is None:
            raise RuntimeError("answer computed by neither version's weights")

    def swap(self) -> float:
        self.swaps += 1
        tmp = self.model_file.with_suffix(".tmp")
        tmp.write_bytes(self.versions.files[2 if self.swaps % 2 == 1 else 1])
        os.replace(tmp, self.model_file)
        t0 = time.perf_counter()
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/v2/repository/models/{MODEL}/load",
                                     method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read()
            status = r.status
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"swap {self.swaps}: load answered {status}")
        return dt


# --------------------------------------------------------------------------
# Open-loop load


class OpenLoop:
    """`threads` clients, each on its own keep-alive connection, sending on a
    fixed schedule (together `rate` req/s). Records (scheduled time, done
    time, ok) per request; a failed request reconnects."""

    def __init__(self, target, rate: float, threads: int):
        self.target, self.rate, self.n = target, rate, threads
        self.stop_ev = threading.Event()
        self.records: list[list[tuple[float, float, bool]]] = [[] for _ in range(threads)]
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> "OpenLoop":
        self.t0 = time.perf_counter() + 0.2
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)

    def _run(self, i: int) -> None:
        period = self.n / self.rate
        first = self.t0 + i / self.rate
        recs = self.records[i]
        conn = None
        k = 0
        while not self.stop_ev.is_set():
            sched = first + k * period
            delay = sched - time.perf_counter()
            if delay > 0 and self.stop_ev.wait(delay):
                break
            row = (k * self.n + i) % ROWS
            k += 1
            try:
                if conn is None:
                    conn = self.target.connect()
                self.target.infer(conn, row)
                ok = True
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                ok = False
                with self.lock:
                    self.failures.append(f"{time.perf_counter() - self.t0:.2f}s: {e!r}"[:400])
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
                conn = None
            recs.append((sched, time.perf_counter(), ok))
        if conn is not None:
            conn.close()

    def all(self) -> list[tuple[float, float, bool]]:
        return [r for recs in self.records for r in recs]


def pct(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return 0.0
    k = min(len(sorted_ms) - 1, max(0, int(np.ceil(q / 100 * len(sorted_ms))) - 1))
    return sorted_ms[k]


@dataclass
class Stats:
    requests: int
    failed: int
    p50: float
    p99: float
    p999: float
    max: float

    @staticmethod
    def of(recs: list[tuple[float, float, bool]]) -> "Stats":
        lat = sorted((done - sched) * 1000 for sched, done, ok in recs if ok)
        return Stats(len(recs), sum(1 for r in recs if not r[2]), pct(lat, 50), pct(lat, 99), pct(lat, 99.9),
                     lat[-1] if lat else 0.0)


@dataclass
class Result:
    system: str
    mode: Mode
    model_mib: float
    baseline: Stats | None = None
    swapping: Stats | None = None
    overlapping: Stats | None = None  # requests in flight while a load call ran
    swap_s: list[float] = field(default_factory=list)  # the swap periods' load calls
    all_swap_s: list[float] = field(default_factory=list)
    rss: dict[str, int] = field(default_factory=dict)
    rss_peak: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    error: str = ""
    other_cpu: float = 0.0  # cores used by other processes on the box during the periods, on average


def settled_rss(pids: list[int]) -> int:
    """RSS once settled: SETTLE_S after the last swap, the lowest of samples
    taken every 0.1 s over another SETTLE_S (the old version's memory goes
    with its last request; one sample catches the allocator mid-way)."""
    time.sleep(SETTLE_S)
    samples = []
    end = time.perf_counter() + SETTLE_S
    while time.perf_counter() < end:
        samples.append(procstat.rss_bytes(pids))
        time.sleep(0.1)
    return min(samples)


def box_cpu_s() -> float:
    """CPU seconds spent on the whole box (all cores, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / procstat.TICK


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def measure(target, mode: Mode, model_mib: float, log=print) -> Result:
    res = Result(target.name, mode, model_mib)
    gc.collect()
    gc.disable()  # no collector pauses in the client's figures (a few MB of records)
    load = None
    peak = [0]
    watch_stop = threading.Event()

    def watch():
        while not watch_stop.wait(0.05):
            peak[0] = max(peak[0], procstat.rss_bytes(target.pids()))

    watcher = threading.Thread(target=watch, daemon=True)
    try:
        target.start()
        # Warm the connections and the model, outside the figures.
        conn = target.connect()
        for i in range(50):
            target.infer(conn, i % ROWS)
        conn.close()
        load = OpenLoop(target, mode.rate, mode.threads).start()
        res.rss["before any swap"] = settled_rss(target.pids())
        watcher.start()
        phases: list[tuple[str, float, float]] = []
        windows: list[tuple[float, float]] = []
        w0 = time.perf_counter()
        res.all_swap_s.append(target.swap())
        windows.append((w0, time.perf_counter()))
        res.rss["after 1 swap"] = settled_rss(target.pids())
        log(f"[swap] {target.name}: RSS {res.rss['before any swap'] / 2**20:.1f} MiB before any swap, "
            f"{res.rss['after 1 swap'] / 2**20:.1f} MiB after 1")
        cpu0 = (time.perf_counter(), box_cpu_s(), procstat.cpu_seconds(target.pids()), own_cpu_s())
        for r in range(mode.rounds):
            start = time.perf_counter()
            time.sleep(mode.period_s)
            phases.append(("baseline", start, time.perf_counter()))
            start = time.perf_counter()
            end = start + mode.period_s
            n = int(round(mode.period_s / mode.every_s))
            for j in range(n):
                at = start + (j + 0.5) * mode.every_s
                time.sleep(max(0.0, at - time.perf_counter()))
                w0 = time.perf_counter()
                dt = target.swap()
                windows.append((w0, time.perf_counter()))
                res.swap_s.append(dt)
                res.all_swap_s.append(dt)
            time.sleep(max(0.0, end - time.perf_counter()))
            phases.append(("swaps", start, time.perf_counter()))
            res.rss[f"after {len(res.all_swap_s)} swaps (end of round {r + 1})"] = procstat.rss_bytes(target.pids())
            log(f"[swap] {target.name}: round {r + 1}/{mode.rounds} done, {len(res.all_swap_s)} swaps so far, "
                f"{len(load.failures)} failed requests")
        cpu1 = (time.perf_counter(), box_cpu_s(), procstat.cpu_seconds(target.pids()), own_cpu_s())
        res.other_cpu = ((cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2]) - (cpu1[3] - cpu0[3])) / (cpu1[0] - cpu0[0])
        # More swaps, back to back (a short pause), up to mem_swaps in all.
        checkpoints = {50, 75} if not mode.quick else set()
        while len(res.all_swap_s) < mode.mem_swaps:
            w0 = time.perf_counter()
            res.all_swap_s.append(target.swap())
            windows.append((w0, time.perf_counter()))
            if len(res.all_swap_s) in checkpoints:
                res.rss[f"after {len(res.all_swap_s)} swaps"] = settled_rss(target.pids())
            else:
                time.sleep(0.2)
        res.rss[f"after {len(res.all_swap_s)} swaps"] = settled_rss(target.pids())
    except Exception as e:  # noqa: BLE001 - reported, and the run fails
        res.error = f"{type(e).__name__}: {e}"
        log(f"[swap] {target.name}: harness error: {res.error}")
        phases, windows = [], []
    finally:
        watch_stop.set()
        if load is not None:
            load.stop()
        try:
            target.stop()
        except Exception as e:  # noqa: BLE001
            res.error = res.error or str(e)
        gc.enable()
    res.rss_peak = peak[0]
    if load is not None:
        recs = load.all()
        res.failed, res.failures = len(load.failures), load.failures[:10]
        if phases:
            def within(kind):
                return [r for r in recs if any(k == kind and a <= r[0] < b for k, a, b in phases)]

            res.baseline, res.swapping = Stats.of(within("baseline")), Stats.of(within("swaps"))
            res.overlapping = Stats.of([r for r in recs if any(r[0] < b and r[1] > a for a, b in windows)])
    return res


# --------------------------------------------------------------------------
# Report


def section(results: list[Result], triton_note: bool = True, number: str = "6") -> list[str]:
    mode = results[0].mode
    lines = [f"### {number}. Hot swaps under load (bench/swap.py{' --quick' if mode.quick else ''})", "",
             f"Model: {results[0].model_mib:.1f} MiB ONNX ({mode.depth} x MatMul 1024x1024 + Tanh, then 1024x16), "
             f"one row per request, every answer checked against the weights of the version that computed it. "
             f"{mode.describe()}. Latency is from each request's scheduled send time (open loop). "
             "Server on core 0, clients and the swap driver on core 1. nusad over HTTPS with binary tensors, "
             "MLServer over plain HTTP with JSON (it has neither TLS nor the binary extension): compare each "
             "system's swap period with its own baseline, not the systems' absolute figures.", "",
             "| system | period | requests | failed | p50 ms | p99 ms | p99.9 ms | max ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.error and r.baseline is None:
            lines.append(f"| {r.system} | harness error: {r.error} | | | | | | |")
            continue
        b, s, o = r.baseline, r.swapping, r.overlapping
        for label, st in ((f"baseline, no swaps ({mode.rounds * mode.period_s:g} s)", b),
                          (f"reload every {mode.every_s:g} s ({mode.rounds * mode.period_s:g} s, "
                           f"{len(r.swap_s)} swaps)", s),
                          (f"in flight during any of the {len(r.all_swap_s)} load calls", o)):
            lines.append(f"| {r.system} | {label} | {st.requests} | {st.failed} | {st.p50:.2f} | {st.p99:.2f} | "
                         f"{st.p999:.2f} | {st.max:.2f} |")

        def ratio(a, c):
            return f"{a / c:.2f}x" if c > 0 else "-"

        lines.append(f"| {r.system} | ratio, reload period / baseline | | | {ratio(s.p50, b.p50)} | "
                     f"{ratio(s.p99, b.p99)} | {ratio(s.p999, b.p999)} | {ratio(s.max, b.max)} |")
        lines.append(f"| {r.system} | ratio, in flight during a load call / baseline | | | {ratio(o.p50, b.p50)} | "
                     f"{ratio(o.p99, b.p99)} | {ratio(o.p999, b.p999)} | {ratio(o.max, b.max)} |")
    lines += ["", "| system | load calls | load call p50 ms | p90 ms | max ms | RSS before any swap MiB | "
              "RSS after 1 swap MiB | RSS after N swaps MiB | N | ratio N / 1 | peak RSS MiB | "
              "failed requests (whole run) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = sorted(x * 1000 for x in r.all_swap_s)
        last = [k for k in r.rss if k.startswith("after ") and k.endswith(" swaps")]
        rn = r.rss[last[-1]] if last else 0
        r1 = r.rss.get("after 1 swap", 0)
        lines.append(f"| {r.system} | {len(d)} | {pct(d, 50):.0f} | {pct(d, 90):.0f} | {d[-1] if d else 0:.0f} | "
                     f"{r.rss.get('before any swap', 0) / 2**20:.1f} | {r1 / 2**20:.1f} | {rn / 2**20:.1f} | "
                     f"{len(d)} | {rn / r1 if r1 else 0:.3f} | {r.rss_peak / 2**20:.1f} | {r.failed} |")
    lines.append("")
    for r in results:
        if len(r.rss) > 3:
            lines.append(f"{r.system} RSS along the way: " + ", ".join(
                f"{k} {v / 2**20:.1f} MiB" for k, v in r.rss.items()) + ".")
    lines.append("CPU of other processes on the box during the latency periods (the box is shared): " + ", ".join(
        f"{r.system} {r.other_cpu:.2f} cores on average" for r in results) + f" (of {os.cpu_count()}).")
    lines += ["Issue 13's target for memory: RSS after 100 swaps within 10% of after 1 swap "
              f"({'quick mode: fewer swaps, not judged' if mode.quick else 'see the ratio'}; "
              "a shared 2-core box is noisy)."]
    for r in results:
        if r.failed:
            lines += ["", f"**{r.system}: {r.failed} failed request(s)**, e.g.:", ""]
            lines += [f"- `{f}`" for f in r.failures]
        if r.error:
            lines += ["", f"**{r.system}: harness error**: `{r.error}`"]
    lines.append("")
    if triton_note:
        lines += [
            "Triton Inference Server: not measured (no package registry here ships it). Quoted, not measured, "
            "from Triton's issue tracker (as collected in the project's fleet notes):", "",
            "- server#8117 (quoted): loading a new version every few minutes under traffic gives latency spikes "
            "big enough for client timeouts; `--model-load-thread-count` does not help.",
            "- server#5042 (quoted): during an explicit model update, requests through a gateway fail with 504, "
            "and direct requests wait until the new model is loaded (minutes for a large model).",
            "- server#2076 (quoted): POLL mode unloads the old version before the new one is loaded, so the "
            "model is down in between.",
            "- server#3320, server#6836 (quoted): memory not returned after unload.", ""]
    return lines


def unit_environment() -> dict[str, str]:
    """The Environment= lines of systemd/nusad.service, as systemd sets them."""
    env = {}
    for line in (ROOT / "systemd" / "nusad.service").read_text().splitlines():
        if line.startswith("Environment="):
            k, _, v = line[len("Environment="):].partition("=")
            env[k] = v
    return env


def run(workdir: Path, quick: bool, mlserver: bool = True, log=print) -> list[Result]:
    """Measures nusad (NUSAD_BIN) and, with mlserver and its venv there, MLServer."""
    mode = Mode.make(quick)
    versions = Versions.make(mode.depth)
    targets = [("nusad", NusadTarget)]
    if mlserver and MLServerTarget.available():
        targets.append(("mlserver", MLServerTarget))
    elif mlserver:
        log("[swap] MLServer venv not installed (scripts/bench installs it): nusad only")
    results = []
    affinity = os.sched_getaffinity(0)
    if pin(1):
        os.sched_setaffinity(0, {1})
    try:
        for slug, cls in targets:
            d = workdir / slug
            d.mkdir(parents=True, exist_ok=True)
            results.append(measure(cls(d, versions), mode, versions.mib, log))
    finally:
        os.sched_setaffinity(0, affinity)
    return results


def failed(results: list[Result]) -> bool:
    return any(r.failed or r.error for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (scripts/bench --quick runs it)")
    ap.add_argument("--no-mlserver", action="store_true", help="nusad only (quick mode: always)")
    ap.add_argument("--mlserver", action="store_true", help="MLServer in quick mode too")
    ap.add_argument("--out", default=None, help="folder for swap-<date>.md (default bench/results in full mode; "
                                                "quick mode prints only)")
    args = ap.parse_args()
    given_bin = os.environ.get("NUSAD_BIN")
    with tempfile.TemporaryDirectory(prefix="swapbench-") as tmp_s:
        tmp = Path(tmp_s)
        if not given_bin:
            # A copy: another build may replace the release nusad while this runs.
            built = nt.cargo_build_dir("release") / "nusad"
            if not built.exists():
                raise SystemExit(f"no release build at {built}: cargo build --release -p nusad")
            (tmp / "bin").mkdir()
            shutil.copy2(built, tmp / "bin" / "nusad")
            os.environ["NUSAD_BIN"] = str(tmp / "bin" / "nusad")
        use_release_build()
        results = run(tmp, args.quick, mlserver=not args.no_mlserver and (args.mlserver or not args.quick))
    lines = section(results, number="")
    lines[0] = lines[0].replace("### . ", "## ")
    text = "\n".join(lines)
    print(text)
    out = args.out or (None if args.quick else str(ROOT / "bench/results"))
    if out:
        stamp = datetime.date.today().isoformat() + ("-quick" if args.quick else "")
        path = Path(out) / f"swap-{stamp}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        cmd = ((f"NUSAD_BIN={given_bin} " if given_bin else "") + "ORT_DYLIB_PATH=$(scripts/fetch-onnxruntime) "
               ".venv/bin/python bench/swap.py" + " ".join([""] + sys.argv[1:]))
        head = [f"# Hot swaps under load, {stamp}", "",
                f"Command: `{cmd.strip()}` (release build of nusad: `cargo build --release -p nusad`).", "",
                f"Machine: {os.cpu_count()} cores, {machine()}; server pinned to core 0, clients to core 1 "
                f"({'taskset' if pin(0) else 'not pinned: one core'}).", ""]
        path.write_text("\n".join(head + lines) + "\n")
        print(f"wrote {path}")
    if failed(results):
        print("[swap] FAILED: " + "; ".join(f"{r.system}: {r.failed} failed request(s)"
                                            + (f", {r.error}" if r.error else "") for r in results
                                            if r.failed or r.error), file=sys.stderr)
        return 1
    return 0


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        mem_gib = int(mem.split()[1]) / 2**20
    except (OSError, StopIteration):
        return model or "unknown CPU"
    return f"{model}, {mem_gib:.0f} GiB RAM, Linux {os.uname().release}, shared with other work"


if __name__ == "__main__":
    raise SystemExit(main())

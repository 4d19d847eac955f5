#!/usr/bin/env python3
"""Soak test (issue 19): a long run at 70% of measured capacity.

    scripts/soak [--minutes 30] [--out FILE] [--bin-dir DIR]

Two nusads: a "region" and the "main" one (the edge box), each on its own
ports, data dir and model repository under a temporary folder. The main one
serves tiny-cnn with the edge cache on (small tiers, 1 MiB memory and
1 MiB of disk records, 256 KiB each in runs under 5 minutes, so both
tiers fill and evict early in the run
instead of growing through it: redb keeps up to 16 MiB of the file's pages
in memory, which grows nusad's RSS until the file stops growing) and `placed-cnn`, the same model with
`placement = "region"`: every request for it is spilled to the region,
deterministically, whatever the load.

The mix, chosen per request by a seeded random generator:

- 40% cache hits: one of 32 fixed inputs (8 of them the golden rows) on
  tiny-cnn; after the first time each is served from the cache;
- 25% cache misses: a fresh random input on tiny-cnn (never seen before,
  so it must be computed: `nusa-served-by: local`), which also feeds the
  disk tier's write-behind;
- 25% spills: a fresh random input on placed-cnn (`cloud:soak-region`);
- 10% bad requests, each expecting its own 4xx: a wrong shape (400), an
  unknown model (404), malformed JSON (400), a wrong datatype (400);

over HTTP/1.1 (50%: keep-alive TLS connections from a pool of threads),
HTTP/2 (25%: curl --http2 in batches multiplexed on one connection each,
back to back) and HTTP/3 (25%: one aioquic connection, a stream per
request). Every 200 is decoded and compared with onnxruntime's answer for
its input (computed here, in batches, before the request is sent), and its
`nusa-served-by` with where it must come from.

First the capacity is measured: closed loop, 32 requests of the same mix
outstanding over the three protocols, for 5 s (10 s in runs of 5 minutes
or more), after 2 s of the same to warm every path. That is the capacity
of this client and these servers together: on a small machine the
client's own CPU (aioquic is pure Python) is part of it. Then the load is
open loop at 70% of that rate, each request scheduled in advance; latency
is measured from the scheduled time (a client or server stall is not
hidden by the client waiting: no coordinated omission).

Every 10 s: RSS (VmRSS) and open file descriptors of each nusad (from
/proc; fds as the highest of five readings 50 ms apart, so a connection
that is just being replaced does not count as a change), the requests
sent, p50/p99 of the good requests of the interval, and the errors by
class. Warm-up is the first 20% of the run, or longer until both cache
tiers have evicted (they are full, and so is redb's page cache; the
report says when a run ended before they did); drift is
the mean of the last three samples against the mean of the first three
after warm-up.

Exit status 0 only when: no good request failed (transport error, a status
other than 200, a wrong or undecodable answer, an answer from a place it
must not come from), every bad request got its 4xx with a JSON error, RSS
and fd drift of each nusad are at most 5%, some requests spilled, and
neither nusad logged a panic or exited.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import http.client
import json
import os
import queue
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/integration"))
import nusatest as nt  # noqa: E402

MODEL = nt.MODEL
PLACED = "placed-cnn"
REGION = "soak-region"
HIT_POOL = 32
WEIGHTS_KIND = {"hit": 40, "miss": 25, "spill": 25, "bad": 10}
WEIGHTS_PROTO = {"h1": 50, "h2": 25, "h3": 25}
LOAD_SHARE = 0.70
MAX_DRIFT = 0.05
WARMUP_SHARE = 0.20
H1_THREADS = 8
H2_BATCH = 24
H3_MAX_STREAMS = 64
CAPACITY_WINDOW = 32
BAD_KINDS = ("shape", "model", "json", "dtype")
BAD_STATUS = {"shape": 400, "model": 404, "json": 400, "dtype": 400}


# --------------------------------------------------------------------------
# Requests and their expected answers


@dataclasses.dataclass
class Job:
    kind: str                 # hit, miss, spill, bad
    proto: str                # h1, h2, h3
    path: str
    body: bytes
    headers: dict
    expected: np.ndarray | None = None   # [1, 10] for good requests
    bad: str | None = None               # which bad request
    due: float = 0.0                     # monotonic: when it was to be sent


@dataclasses.dataclass
class Outcome:
    t: float          # monotonic, when the answer (or failure) came
    kind: str
    proto: str
    latency_s: float
    status: int       # 0: transport error
    served_by: str
    error: str | None  # None: as expected


class Oracle:
    """onnxruntime's answers for fresh random inputs, made in batches on a
    thread of their own (one intra-op thread) ahead of the load."""

    def __init__(self, seed: int = 19):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(nt.DEMO_MODEL), opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.rng = np.random.default_rng(seed)
        self.ready: queue.Queue = queue.Queue(maxsize=8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, daemon=True)
        self.thread.start()

    def expected(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.input: x.astype(np.float32)})[0]

    def _fill(self) -> None:
        while not self.stop.is_set():
            x = self.rng.standard_normal((256, *nt.INPUT_ROW_SHAPE), dtype=np.float32)
            y = self.expected(x)
            while not self.stop.is_set():
                try:
                    self.ready.put((x, y), timeout=0.5)
                    break
                except queue.Full:
                    continue

    def rows(self):
        while True:
            x, y = self.ready.get()
            for i in range(len(x)):
                yield x[i:i + 1], y[i:i + 1]


class Mix:
    """Makes the requests of the mix (seeded, so a run can be repeated)."""

    def __init__(self, oracle: Oracle, seed: int = 7):
        self.rng = random.Random(seed)
        self.oracle = oracle
        self.fresh = oracle.rows()
        gx, gy = nt.golden()
        extra = np.random.default_rng(seed).standard_normal((HIT_POOL - len(gx), *nt.INPUT_ROW_SHAPE),
                                                            dtype=np.float32)
        self.hit_x = np.concatenate([gx, extra])
        self.hit_y = np.concatenate([gy, oracle.expected(extra)])
        self.lock = threading.Lock()
        self.n = 0

    def pick(self, weights: dict) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def job(self, proto: str | None = None) -> Job:
        with self.lock:
            kind = self.pick(WEIGHTS_KIND)
            proto = proto or self.pick(WEIGHTS_PROTO)
            self.n += 1
            n = self.n
            if kind == "hit":
                i = self.rng.randrange(HIT_POOL)
                x, y = self.hit_x[i:i + 1], self.hit_y[i:i + 1]
            elif kind in ("miss", "spill"):
                x, y = next(self.fresh)
            else:
                x, y = self.hit_x[:1], None
        model = PLACED if kind == "spill" else MODEL
        # Alternate binary and JSON outputs: both encoders get exercised.
        body, headers = nt.infer_request({nt.INPUT: x}, outputs=[nt.OUTPUT], binary_output=n % 2 == 0)
        if kind != "bad":
            return Job(kind, proto, nt.infer_path(model), body, headers, y)
        bad = BAD_KINDS[n % len(BAD_KINDS)]
        path = nt.infer_path(MODEL)
        if bad == "shape":
            body = nt.json_infer_body(x.reshape(-1)[:3 * 32 * 31], shape=[1, 3, 32, 31])
            headers = dict(nt.JSON_HEADERS)
        elif bad == "model":
            path = nt.infer_path("no-such-model")
        elif bad == "json":
            body, headers = b'{"inputs": [{"name": "input", "shape": [1, 3', dict(nt.JSON_HEADERS)
        elif bad == "dtype":
            body = nt.json_infer_body(np.zeros((1, *nt.INPUT_ROW_SHAPE), dtype=np.int32),
                                      datatype="INT32")
            headers = dict(nt.JSON_HEADERS)
        return Job("bad", proto, path, body, headers, None, bad)


def judge(job: Job, resp: nt.Response) -> str | None:
    """None when resp is what job must get, else what was wrong."""
    if job.kind == "bad":
        if resp.status != BAD_STATUS[job.bad]:
            return f"bad request '{job.bad}': status {resp.status}, expected {BAD_STATUS[job.bad]}"
        try:
            msg = json.loads(resp.body).get("error")
        except (ValueError, AttributeError):
            msg = None
        return None if isinstance(msg, str) and msg else f"bad request '{job.bad}': no JSON error body"
    if resp.status != 200:
        return f"status {resp.status}: {resp.body[:200]!r}"
    served = nt.served_by(resp)
    if job.kind == "miss" and served != "local":
        return f"a fresh input answered by {served!r}"
    if job.kind == "spill" and not served.startswith("cloud:"):
        return f"placed model answered by {served!r}"
    if job.kind == "hit" and served not in ("cache", "local"):
        return f"a cacheable request answered by {served!r}"
    try:
        _, arrays = nt.decode_infer_response(resp)
        actual = arrays[nt.OUTPUT]
    except (AssertionError, KeyError, ValueError) as e:
        return f"undecodable answer: {e}"
    if actual.shape != job.expected.shape or not np.allclose(actual, job.expected, rtol=nt.RTOL,
                                                             atol=nt.ATOL):
        return f"wrong answer (served by {served!r})"
    return None


def error_class(o: Outcome) -> str:
    if o.status == 0:
        return "transport"
    if o.error and o.error.startswith(("wrong", "undecodable")):
        return "wrong answer"
    if o.error and "answered by" in o.error:
        return "wrong place"
    return f"status {o.status}" if o.kind != "bad" else f"bad got {o.status}"


# --------------------------------------------------------------------------
# Clients: HTTP/1.1 threads, HTTP/2 curl batches, HTTP/3 aioquic


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.sent = 0

    def add(self, o: Outcome) -> None:
        with self.lock:
            self.outcomes.append(o)

    def take(self) -> list[Outcome]:
        with self.lock:
            out, self.outcomes = self.outcomes, []
            return out


def record(rec: Recorder, job: Job, t0: float, resp: nt.Response | None, err: str | None) -> None:
    t = time.monotonic()
    t0 = min(t0, job.due or t0)
    if resp is None:
        rec.add(Outcome(t, job.kind, job.proto, t - t0, 0, "", f"transport: {err}"))
    else:
        rec.add(Outcome(t, job.kind, job.proto, t - t0, resp.status, nt.served_by(resp), judge(job, resp)))


class H1Pool:
    def __init__(self, server: nt.NusadServer, rec: Recorder, threads: int = H1_THREADS):
        self.server, self.rec = server, rec
        self.q: queue.Queue = queue.Queue()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def submit(self, job: Job) -> None:
        self.q.put(job)

    def _run(self) -> None:
        conn = None
        while True:
            job = self.q.get()
            if job is None:
                break
            t0 = time.monotonic()
            for attempt in (0, 1):
                if conn is None:
                    conn = http.client.HTTPSConnection(self.server.host, self.server.port, timeout=30,
                                                       context=self.server.ssl_context())
                try:
                    conn.request("POST", job.path, body=job.body, headers=job.headers)
                    r = conn.getresponse()
                    resp = nt.Response(r.status, nt.join_headers(r.getheaders()), r.read(), "1.1")
                    if r.will_close:
                        conn.close()
                        conn = None
                    record(self.rec, job, t0, resp, None)
                    break
                except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                    # A keep-alive connection the server closed (idle): one fresh try.
                    conn.close()
                    conn = None
                    if attempt:
                        record(self.rec, job, t0, None, repr(e))
                except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                    if conn is not None:
                        conn.close()
                    conn = None
                    record(self.rec, job, t0, None, repr(e))
                    break
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join(60)


class H2Curl:
    """HTTP/2 through curl: each batch one curl process, its requests
    multiplexed on one connection (--parallel), answers written to files and
    checked here. Batches run back to back on one thread."""

    def __init__(self, server: nt.NusadServer, rec: Recorder, tmp: Path):
        self.server, self.rec, self.tmp = server, rec, tmp
        self.q: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.batches = 0

    def submit(self, job: Job) -> None:
        self.q.put(job)

    def _run(self) -> None:
        while not (self.stop.is_set() and self.q.empty()):
            jobs = []
            try:
                jobs.append(self.q.get(timeout=0.2))
            except queue.Empty:
                continue
            deadline = time.monotonic() + 0.05
            while len(jobs) < H2_BATCH and time.monotonic() < deadline:
                try:
                    jobs.append(self.q.get(timeout=0.01))
                except queue.Empty:
                    pass
            self._batch(jobs)

    def _batch(self, jobs: list[Job]) -> None:
        d = self.tmp / f"h2-{self.batches % 2}"
        self.batches += 1
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        cfg = []
        for i, job in enumerate(jobs):
            (d / f"req{i}").write_bytes(job.body)
            if i:
                cfg.append("next")
            cfg += ["http2", f'cacert = "{self.server.ca_path}"', f'data-binary = "@{d}/req{i}"',
                    f'output = "{d}/body{i}"', f'dump-header = "{d}/head{i}"', "silent",
                    'write-out = "%{urlnum} %{http_code} %{time_total}\\n"', "max-time = 30"]
            cfg += [f'header = "{k}: {v}"' for k, v in job.headers.items()]
            cfg.append(f'url = "{self.server.url(job.path)}"')
        (d / "config").write_text("\n".join(cfg) + "\n")
        start = time.monotonic()
        p = subprocess.run(["curl", "--parallel", "--parallel-max", str(H2_BATCH), "--config",
                            str(d / "config")], capture_output=True, text=True, timeout=90)
        wall = time.monotonic() - start
        seen = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3:
                seen[int(parts[0])] = (int(parts[1]), float(parts[2]))
        for i, job in enumerate(jobs):
            code, took = seen.get(i, (0, wall))
            took += start - min(job.due or start, start)
            if code == 0:
                self.rec.add(Outcome(time.monotonic(), job.kind, job.proto, took, 0, "",
                                     f"transport: curl exit {p.returncode} {p.stderr.strip()[:200]}"))
                continue
            blocks = [b for b in (d / f"head{i}").read_text("latin-1").replace("\r\n", "\n").split("\n\n")
                      if b.strip()]
            lines = blocks[-1].splitlines()[1:] if blocks else []
            hdrs = nt.join_headers(tuple(x.split(":", 1)) for x in lines if ":" in x)
            body = (d / f"body{i}").read_bytes() if (d / f"body{i}").exists() else b""
            resp = nt.Response(code, hdrs, body, "2")
            self.rec.add(Outcome(time.monotonic(), job.kind, job.proto, took, code, nt.served_by(resp),
                                 judge(job, resp)))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(120)


class H3Conn:
    """One HTTP/3 connection (aioquic) on an event loop thread; a stream per request."""

    def __init__(self, server: nt.NusadServer, rec: Recorder):
        self.server, self.rec = server, rec
        self.loop = asyncio.new_event_loop()
        self.aq: asyncio.Queue | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),),
                                       daemon=True)
        self.thread.start()
        self.started.wait(30)
        self.reconnects = 0

    def submit(self, job: Job) -> None:
        self.loop.call_soon_threadsafe(self.aq.put_nowait, job)

    async def _main(self) -> None:
        from aioquic.asyncio import connect
        import h3client
        self.aq = asyncio.Queue()
        self.started.set()
        sem = asyncio.Semaphore(H3_MAX_STREAMS)
        tasks: set = set()
        done = False
        while not done:
            try:
                async with connect(self.server.host, self.server.port,
                                   configuration=h3client._configuration(self.server),
                                   create_protocol=h3client.H3ClientProtocol) as client:
                    while True:
                        job = await self.aq.get()
                        if job is None:
                            done = True
                            break
                        await sem.acquire()
                        task = asyncio.ensure_future(self._one(client, job, sem))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    if tasks:
                        await asyncio.wait(tasks, timeout=60)
            except Exception as e:  # noqa: BLE001: a lost connection; record and reconnect
                self.reconnects += 1
                print(f"[soak] HTTP/3 connection lost ({e!r}); reconnecting", file=sys.stderr)
                await asyncio.sleep(0.2)

    async def _one(self, client, job: Job, sem: asyncio.Semaphore) -> None:
        import h3client
        t0 = time.monotonic()
        try:
            resp = await asyncio.wait_for(
                client.request(self.server.authority, h3client.H3Request("POST", job.path, job.body,
                                                                         job.headers)), 30)
            record(self.rec, job, t0, resp, None)
        except Exception as e:  # noqa: BLE001
            record(self.rec, job, t0, None, repr(e))
        finally:
            sem.release()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.aq.put_nowait, None)
        self.thread.join(90)


# --------------------------------------------------------------------------
# Servers


def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS bytes, open fds; the highest of five readings 50 ms apart)."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    fds = 0
    for i in range(5):
        fds = max(fds, len(os.listdir(f"/proc/{pid}/fd")))
        if i < 4:
            time.sleep(0.05)
    return rss, fds


def start_servers(work: Path, memory_bytes: int, disk_bytes: int) -> tuple[nt.NusadServer, nt.NusadServer]:
    batch = nt.batching(max_batch_size=8, max_queue_delay_us=500, max_queue_size=1024)
    limits = {"limits": {"max_body_bytes": 64 << 20}}
    region = nt.start_server("region", work / "region", {PLACED: ((1,), batch)}, limits)
    region_entry = {"name": REGION, "url": f"https://{region.authority}", "ca": str(region.ca_path),
                    "timeout_ms": 5000}
    config = dict(limits)
    config["cache"] = {"memory_bytes": memory_bytes, "disk_bytes": disk_bytes}
    config["spill"] = {"enabled": True, "max_tries": 1, "probe_interval_ms": 5000}
    config["regions"] = [region_entry]
    models = {MODEL: ((1,), {**batch, "cache": {"enabled": True, "ttl_s": 86400}}),
              PLACED: ((1,), {**batch, "placement": "region"})}
    try:
        main = nt.start_server("main", work / "main", models, config)
    except BaseException:
        region.stop()
        raise
    return region, main


# --------------------------------------------------------------------------
# The run


def measure_capacity(sinks: dict, rec: Recorder, mix: Mix, seconds: float, window: int = 32) -> float:
    """Closed loop over the three protocols: `window` requests of the mix
    outstanding, a new one sent as each completes; completed requests per
    second. This is the capacity of this client and these servers together."""
    submitted = completed = 0

    def send() -> None:
        nonlocal submitted
        job = mix.job()
        job.due = time.monotonic()
        sinks[job.proto].submit(job)
        submitted += 1

    def collect() -> int:
        nonlocal completed
        got = rec.take()
        bad = [o for o in got if o.error]
        if bad:
            raise SystemExit(f"[soak] capacity run: {bad[0].kind}/{bad[0].proto}: {bad[0].error}")
        completed += len(got)
        return len(got)

    for _ in range(window):
        send()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(collect()):
            send()
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    done = completed
    # Let the last ones finish before the soak starts.
    deadline = time.monotonic() + 60
    while completed < submitted and time.monotonic() < deadline:
        collect()
        time.sleep(0.01)
    return done / elapsed


@dataclasses.dataclass
class Interval:
    t_s: float
    sent: int
    answered: int
    p50_ms: float
    p99_ms: float
    by_proto_p99: dict
    errors: dict
    tiers_full: bool
    rss: dict      # server name -> bytes
    fds: dict


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values else float("nan")


def run(minutes: float, log=print) -> tuple[bool, list[str]]:
    interval_s = 10.0
    work = Path(tempfile.mkdtemp(prefix="nusa-soak-"))
    oracle = Oracle()
    mix = Mix(oracle)
    region = main = None
    failures: list[str] = []
    try:
        # Small tiers, smaller still in short runs, so that they fill early.
        tier_bytes = (1 << 20) if minutes >= 5 else (256 << 10)
        region, main = start_servers(work, tier_bytes, tier_bytes)
        servers = {"main": main, "region": region}
        log(f"[soak] main on {main.authority}, region on {region.authority}; work dir {work}")
        # Warm the paths (every kind, every protocol) before measuring.
        rec = Recorder()
        h1 = H1Pool(main, rec)
        h2 = H2Curl(main, rec, work / "curl")
        h3 = H3Conn(main, rec)
        sinks = {"h1": h1, "h2": h2, "h3": h3}
        capacity_s = 5.0 if minutes < 5 else 10.0
        measure_capacity(sinks, rec, mix, 2.0, CAPACITY_WINDOW)
        capacity = measure_capacity(sinks, rec, mix, capacity_s, CAPACITY_WINDOW)
        rate = LOAD_SHARE * capacity
        log(f"[soak] capacity {capacity:.0f} req/s (closed loop, {CAPACITY_WINDOW} requests of the mix "
            f"outstanding over the three protocols, {capacity_s:.0f} s); soak at {rate:.0f} req/s "
            f"for {minutes:g} min")
        intervals: list[Interval] = []
        totals: collections.Counter = collections.Counter()
        kinds: collections.Counter = collections.Counter()
        served: collections.Counter = collections.Counter()
        first_errors: list[str] = []
        all_lat: list[float] = []
        duration = minutes * 60
        start = time.monotonic()
        next_sample = start + interval_s
        sent = sent_at_sample = 0
        i = 0
        while True:
            now = time.monotonic()
            if now >= start + duration:
                break
            due = start + i / rate
            if now >= next_sample:
                got = rec.take()
                sample_t = now - start
                lat = [o.latency_s for o in got if o.kind != "bad" and not o.error]
                all_lat.extend(lat)
                errs: collections.Counter = collections.Counter()
                for o in got:
                    kinds[o.kind] += 1
                    if o.status == 200:
                        served[o.served_by] += 1
                    if o.error:
                        errs[error_class(o)] += 1
                        if len(first_errors) < 10:
                            first_errors.append(f"{o.kind}/{o.proto}: {o.error}")
                totals.update(errs)
                rss, fds = {}, {}
                for name, s in servers.items():
                    if not s.alive():
                        failures.append(f"{name} nusad exited (code {s.proc.poll() if s.proc else '?'})")
                        raise StopIteration
                    rss[name], fds[name] = proc_sample(s.proc.pid)
                by_proto = {p: pct([o.latency_s for o in got if o.proto == p and o.kind != "bad"
                                    and not o.error], 99) for p in ("h1", "h2", "h3")}
                try:
                    ms = nt.scrape_metrics(main)
                    full = all(nt.metric_sum(ms, "nusa_cache_evictions_total", tier=t) > 0
                               for t in ("memory", "disk"))
                except (OSError, AssertionError):
                    full = False
                iv = Interval(sample_t, sent - sent_at_sample, len(got), pct(lat, 50), pct(lat, 99),
                              by_proto, dict(errs), full, rss, fds)
                intervals.append(iv)
                sent_at_sample = sent
                log(f"[soak] {sample_t:6.0f} s sent {iv.sent} answered {iv.answered} "
                    f"p50 {iv.p50_ms:.1f} p99 {iv.p99_ms:.1f} ms (h1 {by_proto['h1']:.1f}, h2 "
                    f"{by_proto['h2']:.1f}, h3 {by_proto['h3']:.1f}) errors {dict(errs) or 0} "
                    + " ".join(f"{n}: rss {rss[n] / 2**20:.1f} MiB fds {fds[n]}" for n in servers))
                next_sample += interval_s
                continue
            if now < due:
                time.sleep(min(due - now, next_sample - now, 0.005))
                continue
            job = mix.job()
            job.due = due
            sinks[job.proto].submit(job)
            sent += 1
            i += 1
        elapsed = time.monotonic() - start
        for sink in (h1, h2, h3):
            sink.close()
        tail = rec.take()
        for o in tail:
            kinds[o.kind] += 1
            if o.status == 200:
                served[o.served_by] += 1
            if o.error:
                totals[error_class(o)] += 1
                if len(first_errors) < 10:
                    first_errors.append(f"{o.kind}/{o.proto}: {o.error}")
        answered = sum(iv.answered for iv in intervals) + len(tail)
        metrics = nt.scrape_metrics(main)
        panics = [n for n, s in servers.items() if "panicked" in s.log_path.read_text("utf-8", "replace")]
        spilled = sum(v for k, v in served.items() if k.startswith("cloud:"))

        # Verdicts
        good_errors = {k: v for k, v in totals.items() if not k.startswith("bad got")}
        bad_errors = {k: v for k, v in totals.items() if k.startswith("bad got")}
        if good_errors:
            failures.append(f"good requests failed: {good_errors}")
        if bad_errors:
            failures.append(f"bad requests not answered with their 4xx: {bad_errors}")
        if answered != sent:
            failures.append(f"{sent - answered} requests sent but never answered or failed")
        if spilled == 0:
            failures.append("no request was spilled to the region")
        if panics:
            failures.append(f"panic in the log of {panics}")
        warm = int(round(len(intervals) * WARMUP_SHARE)) or 1
        filled = next((n + 1 for n, iv in enumerate(intervals) if iv.tiers_full), None)
        if filled is not None:
            warm = max(warm, filled)
        post = intervals[warm:]
        k = max(1, min(3, len(post) // 3))
        drift_rows = []
        for name in servers:
            for what, get in (("RSS", lambda iv, n=name: iv.rss[n]), ("fds", lambda iv, n=name: iv.fds[n])):
                if len(post) < 2:
                    failures.append("too few samples after warm-up to judge drift")
                    break
                first = float(np.mean([get(iv) for iv in post[:k]]))
                last = float(np.mean([get(iv) for iv in post[-k:]]))
                peak = max(get(iv) for iv in post)
                drift = (last - first) / first
                drift_rows.append((name, what, first, last, peak, drift))
                if drift > MAX_DRIFT:
                    failures.append(f"{name} {what} drifted {drift * 100:+.1f}% after warm-up "
                                    f"({first:.0f} -> {last:.0f}; at most {MAX_DRIFT * 100:.0f}%)")

        lines = report(minutes, capacity, rate, sent, answered, elapsed, intervals, warm, k, totals,
                       kinds, served, drift_rows, first_errors, metrics, failures, all_lat,
                       h3.reconnects)
        return not failures, lines
    except StopIteration:
        return False, [f"# Soak FAILED: {'; '.join(failures)}"] + (
            [f"```\n{s.log_tail(4000)}\n```" for s in (main, region) if s is not None])
    finally:
        oracle.stop.set()
        for s in (main, region):
            if s is not None:
                s.stop()
        shutil.rmtree(work, ignore_errors=True)


def report(minutes, capacity, rate, sent, answered, elapsed, intervals, warm, k, totals, kinds, served,
           drift_rows, first_errors, metrics, failures, all_lat, h3_reconnects) -> list[str]:
    def m(name, **labels):
        return nt.metric_sum(metrics, name, **labels)

    mib = 2 ** 20
    out = [f"# Soak test, {datetime.date.today()}: {minutes:g} minutes at {LOAD_SHARE:.0%} of capacity",
           "",
           f"Result: **{'PASS' if not failures else 'FAIL'}**"
           + ("" if not failures else ": " + "; ".join(failures)),
           "",
           f"- Command: `scripts/soak --minutes {minutes:g}` (the default, and the issue's full run, is 30 "
           f"minutes); nusad: {os.environ.get('NUSA_SOAK_BIN_SOURCE', 'NUSAD_BIN')}.",
           f"- Machine: {os.cpu_count()} cores ({platform_line()}), shared with other work while it ran; "
           "client and both servers on the same cores.",
           f"- Capacity: {capacity:.0f} req/s (closed loop, {CAPACITY_WINDOW} requests of the same mix outstanding "
           "over the three protocols: this client and these servers together); "
           f"load: {rate:.0f} req/s open loop; achieved {sent / elapsed:.0f} req/s "
           f"({sent} sent, {answered} answered in {elapsed:.0f} s).",
           f"- Mix by kind (answered): {dict(sorted(kinds.items()))}; by place (200s): "
           f"{dict(sorted(served.items()))}; protocols "
           + ", ".join(f"{p} {w}%" for p, w in WEIGHTS_PROTO.items()) + ".",
           f"- Latency of good requests over the whole run: p50 {pct(all_lat, 50):.1f} ms, "
           f"p99 {pct(all_lat, 99):.1f} ms, max {pct(all_lat, 100):.1f} ms.",
           f"- Errors: {dict(totals) or 'none'}"
           + (f"; first: {first_errors}" if first_errors else "") + ".",
           f"- main nusad's counters: cache hits memory {m('nusa_cache_hits_total', tier='memory'):.0f}, "
           f"disk {m('nusa_cache_hits_total', tier='disk'):.0f}, misses {m('nusa_cache_misses_total'):.0f}, "
           f"evictions memory {m('nusa_cache_evictions_total', tier='memory'):.0f} / disk "
           f"{m('nusa_cache_evictions_total', tier='disk'):.0f}, disk writes dropped "
           f"{m('nusa_cache_disk_writes_dropped_total'):.0f}, spilled {m('nusa_spilled_total'):.0f}; "
           f"HTTP/3 reconnects {h3_reconnects}.",
           "",
           ("" if any(iv.tiers_full for iv in intervals) else
            "The cache tiers never both evicted in this run: the drift is judged before they were full."),
           f"## Drift after warm-up (the first {warm} samples: {WARMUP_SHARE:.0%} of the run, or until "
           "both cache tiers had evicted, whichever is later)",
           "",
           f"Mean of the first {k} samples after warm-up against the mean of the last {k}; "
           f"at most {MAX_DRIFT:.0%}.",
           "",
           "| nusad | | after warm-up | at the end | peak | drift |",
           "|---|---|---|---|---|---|"]
    for name, what, first, last, peak, drift in drift_rows:
        fmt = (lambda v: f"{v / mib:.1f} MiB") if what == "RSS" else (lambda v: f"{v:.0f}")
        out.append(f"| {name} | {what} | {fmt(first)} | {fmt(last)} | {fmt(peak)} | {drift * 100:+.1f}% |")
    out += ["", "## Every 10 s", "",
            "| t (s) | sent | answered | p50 ms | p99 ms | p99 h1 / h2 / h3 ms | errors | "
            "main RSS MiB | main fds | region RSS MiB | region fds |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, iv in enumerate(intervals):
        mark = " (warm-up)" if n < warm else ""
        p = iv.by_proto_p99
        out.append(f"| {iv.t_s:.0f}{mark} | {iv.sent} | {iv.answered} | {iv.p50_ms:.1f} | {iv.p99_ms:.1f} | "
                   f"{p['h1']:.1f} / {p['h2']:.1f} / {p['h3']:.1f} | {iv.errors or 0} | "
                   f"{iv.rss['main'] / mib:.1f} | {iv.fds['main']} | {iv.rss['region'] / mib:.1f} | "
                   f"{iv.fds['region']} |")
    return out


def platform_line() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the soak (default 30)")
    ap.add_argument("--out", default=None, help="write the markdown report here (default: print it)")
    ap.add_argument("--bin-dir", default=None,
                    help="folder with nusad (default: NUSAD_BIN, else the release build)")
    args = ap.parse_args()
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    with tempfile.TemporaryDirectory(prefix="nusa-soak-bin-") as tmp:
        src = (Path(args.bin_dir) / "nusad" if args.bin_dir
               else Path(os.environ["NUSAD_BIN"]) if os.environ.get("NUSAD_BIN")
               else nt.cargo_build_dir("release") / "nusad")
        if not src.is_file():
            raise SystemExit(f"[soak] no nusad at {src}: cargo build --release -p nusad, or --bin-dir")
        # A copy: another build may replace the binary while this runs.
        shutil.copy2(src, Path(tmp) / "nusad")
        os.environ["NUSA_SOAK_BIN_SOURCE"] = str(src)
        os.environ["NUSAD_BIN"] = str(Path(tmp) / "nusad")
        print(f"[soak] nusad: {src}", flush=True)
        ok, lines = run(args.minutes, log=lambda s: print(s, flush=True))
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"[soak] wrote {args.out}")
    else:
        print(text)
    print(f"[soak] {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

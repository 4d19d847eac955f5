"""kill -9 under load, under socket activation with restarts (issue 19).

The test holds nusad's listening sockets (TCP `https`, UDP `quic`, TCP
`metrics`) as systemd's nusad*.socket units do, and starts nusad on them
through sdactivate.py (test_systemd.py's helper: LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES, exec); there is no booted systemd here, so `systemd-run`
with a transient socket unit is not possible. Four client threads send
HTTP/1.1 keep-alive requests to tiny-cnn with the edge cache on (memory and
redb disk tier): half of them fresh random inputs (cache misses, each sent
once, whose answers go to the disk tier's write-behind), half from a pool
of 16 repeated inputs (hits, from disk after a restart). Twenty times the
nusad process is killed with SIGKILL at a random point, every other time
right after a miss was answered (its record is then in the write-behind
queue or being committed), and started again at once on the same sockets,
as `Restart=` does (nusad.service waits RestartSec=2s first; meanwhile the
kernel queues new connections on the listening socket).

Asserted:
- only requests in flight fail: every failure is a transport error on a
  connection opened to the killed process before the kill, failing after
  it (the request in flight, or one a client sent on that connection
  before it saw it closed); at most one per client per kill; a connection
  opened after a kill never fails;
- no request is answered wrongly or twice: each request carries a unique
  `id` and is sent exactly once (no client retries); every 200 echoes its
  own id, comes from where it may (a fresh input never from the cache) and
  its outputs match onnxruntime's for its input;
- the new process is ready (`/v2/health/ready` 200 through the passed
  socket) within 2 s of its start, every time;
- the cache file opens after each kill: a moved-aside file
  (`cache.redb.corrupt-*`, logged) is counted and allowed, but serving
  continues either way; disk hits after restarts show the file was kept;
- no panic in the log.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt
from test_systemd import SDACTIVATE, port_of, tcp_listener, udp_socket

pytestmark = pytest.mark.timeout(300)

KILLS = int(os.environ.get("NUSA_CRASH_KILLS", "20"))
CLIENTS = 4
READY_LIMIT_S = 2.0
FRESH_ROWS = 10000
HIT_ROWS = 16


class Oracle:
    def __init__(self) -> None:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(nt.DEMO_MODEL), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = [self.sess.run(None, {"input": x[i:i + 512]})[0] for i in range(0, len(x), 512)]
        return np.concatenate(out)


class ActivatedNusad(nt.NusadServer):
    """nusad on sockets this test holds across its restarts (systemd's role)."""

    def __init__(self, workdir: Path, models_dir: Path, config: dict):
        super().__init__("crash", workdir, models_dir, config)
        self.https, self.quic, self.metrics = tcp_listener(), udp_socket(), tcp_listener()
        self.port, self.metrics_port = port_of(self.https), port_of(self.metrics)
        self.starts = 0

    def launch(self) -> float:
        """Starts nusad on the held sockets; returns the monotonic start time."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fds = [self.https, self.quic, self.metrics]
        args = [sys.executable, str(SDACTIVATE), "https:quic:metrics",
                ",".join(str(s.fileno()) for s in fds), str(nt.nusad_binary()),
                "--data", str(self.data_dir), "--models", str(self.models_dir),
                "--config", str(self.config_path), "--admin-listen", "off"]
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {self.starts}: {' '.join(args)}\n".encode())
            log.flush()
            t0 = time.monotonic()
            self.proc = subprocess.Popen(args, env=nt.nusad_env(), stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         pass_fds=[s.fileno() for s in fds])
        return t0

    def wait_ready_s(self, t0: float, timeout: float = 60) -> float:
        """Seconds from t0 until /v2/health/ready answers 200."""
        while time.monotonic() - t0 < timeout:
            assert self.proc is not None and self.proc.poll() is None, \
                f"nusad exited ({self.proc.returncode if self.proc else '?'}):\n{self.log_tail()}"
            if self.ca_path.exists():
                try:
                    if nt.https1(self, "GET", "/v2/health/ready", timeout=2).status == 200:
                        return time.monotonic() - t0
                except (OSError, ssl.SSLError, http.client.HTTPException):
                    pass
            time.sleep(0.01)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log_tail()}")

    def kill9(self) -> float:
        assert self.proc is not None
        t = time.monotonic()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return t

    def close(self) -> None:
        self.stop()
        for s in (self.https, self.quic, self.metrics):
            s.close()


class Client(threading.Thread):
    """Sends requests back to back on one keep-alive connection; never retries."""

    def __init__(self, n: int, server: ActivatedNusad, work: "Work"):
        super().__init__(daemon=True)
        self.n, self.server, self.work = n, server, work
        self.records: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn, opened = None, 0.0
        rng = random.Random(self.n)
        i = 0
        while not self.stop.is_set():
            i += 1
            rid = f"c{self.n}-{i}"
            row, kind = (self.work.take_fresh(), "miss") if rng.random() < 0.5 else (None, "hit")
            if row is None:  # a hit, or the fresh rows are used up
                row, kind = rng.randrange(HIT_ROWS), "hit"
            x = self.work.x[row:row + 1]
            header = {"id": rid, "inputs": [{"name": nt.INPUT, "shape": [1, 3, 32, 32], "datatype": "FP32",
                                             "parameters": {"binary_data_size": x.nbytes}}],
                      "outputs": [{"name": nt.OUTPUT, "parameters": {"binary_data": True}}]}
            hb = json.dumps(header).encode()
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(len(hb))}
            rec = {"id": rid, "row": row, "kind": kind, "start": time.monotonic()}
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(self.server.host, self.server.port, timeout=30,
                                                       context=self.server.ssl_context())
                    conn.connect()
                    opened = time.monotonic()
                rec["opened"] = opened
                conn.request("POST", nt.infer_path(), body=hb + x.tobytes(), headers=headers)
                r = conn.getresponse()
                resp = nt.Response(r.status, nt.join_headers(r.getheaders()), r.read(), "1.1")
                rec.update(end=time.monotonic(), status=resp.status, resp=resp)
                if resp.status == 200 and nt.served_by(resp) == "local" and kind == "miss":
                    self.work.miss_answered.set()
            except (OSError, ssl.SSLError, http.client.HTTPException) as e:
                rec.update(end=time.monotonic(), status=0, error=repr(e))
                rec.setdefault("opened", opened if conn is not None else time.monotonic())
                if conn is not None:
                    conn.close()
                conn = None
            self.records.append(rec)
        if conn is not None:
            conn.close()


class Work:
    def __init__(self, oracle: Oracle):
        rng = np.random.default_rng(19)
        self.x = rng.standard_normal((HIT_ROWS + FRESH_ROWS, 3, 32, 32), dtype=np.float32)
        self.y = oracle(self.x)
        self.next_fresh = HIT_ROWS
        self.lock = threading.Lock()
        self.miss_answered = threading.Event()

    def take_fresh(self) -> int | None:
        with self.lock:
            if self.next_fresh >= len(self.x):
                return None
            self.next_fresh += 1
            return self.next_fresh - 1


def check_answer(work: Work, rec: dict) -> str | None:
    resp: nt.Response = rec["resp"]
    if resp.status != 200:
        return f"status {resp.status}: {resp.body[:200]!r}"
    served = nt.served_by(resp)
    if served not in ("local", "cache") or (rec["kind"] == "miss" and served != "local"):
        return f"{rec['kind']} answered by {served!r}"
    try:
        header, arrays = nt.decode_infer_response(resp)
    except (AssertionError, KeyError, ValueError) as e:
        return f"undecodable: {e}"
    if header.get("id") != rec["id"]:
        return f"answer for id {header.get('id')!r} to request {rec['id']!r}"
    expected = work.y[rec["row"]:rec["row"] + 1]
    actual = arrays.get(nt.OUTPUT)
    if actual is None or actual.shape != expected.shape or not np.allclose(actual, expected,
                                                                           rtol=nt.RTOL, atol=nt.ATOL):
        return "wrong answer"
    return None


def test_kill_9_under_load(tmp_path):
    oracle = Oracle()
    work = Work(oracle)
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), {
        **nt.batching(max_batch_size=8, max_queue_delay_us=500, max_queue_size=1024),
        "cache": {"enabled": True, "ttl_s": 86400}})})
    config = {"limits": {"max_body_bytes": 64 << 20},
              "cache": {"memory_bytes": 8 << 20, "disk_bytes": 64 << 20}}
    (tmp_path / "crash").mkdir()
    server = ActivatedNusad(tmp_path / "crash", models, config)
    rng = random.Random(1919)
    ready_times: list[float] = []
    kills: list[float] = []
    clients: list[Client] = []
    try:
        first = server.wait_ready_s(server.launch())
        clients = [Client(n, server, work) for n in range(CLIENTS)]
        for c in clients:
            c.start()
        for k in range(KILLS):
            if k % 2:
                # Right after a miss was answered: its record is on its way
                # through the write-behind queue into a redb transaction.
                work.miss_answered.clear()
                assert work.miss_answered.wait(10), "no miss answered in 10 s"
                time.sleep(rng.uniform(0, 0.004))
            else:
                time.sleep(rng.uniform(0.05, 0.6))
            kills.append(server.kill9())
            ready_times.append(server.wait_ready_s(server.launch()))
            time.sleep(0.15)  # some load on the new process before the next kill
        time.sleep(0.5)
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(60)
        samples = nt.scrape_metrics(server) if server.alive() else []
        server.close()

    log = server.log_path.read_text("utf-8", "replace")
    records = [r for c in clients for r in c.records]
    answered = [r for r in records if r["status"] != 0]
    failed = [r for r in records if r["status"] == 0]
    moved_aside = log.count("moving it aside")
    print(f"\n[crash] {KILLS} kills; first start ready in {first:.2f} s; restarts ready in "
          f"min {min(ready_times):.2f} / median {float(np.median(ready_times)):.2f} / "
          f"max {max(ready_times):.2f} s; {len(records)} requests, {len(failed)} failed (in flight); "
          f"cache file moved aside {moved_aside} times; disk hits since the last start "
          f"{nt.metric_sum(samples, 'nusa_cache_hits_total', tier='disk'):.0f}")

    # Ready within 2 s of every start.
    slow = [f"restart {i + 1}: {t:.2f} s" for i, t in enumerate(ready_times) if t > READY_LIMIT_S]
    assert not slow, f"not ready within {READY_LIMIT_S} s: {slow}"

    # No wrong answer, none for another request, none twice.
    wrong = [(r["id"], e) for r in answered if (e := check_answer(work, r))]
    assert not wrong, f"{len(wrong)} wrong answers, first: {wrong[:5]}"
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a request id was sent twice"
    echoed = [nt.decode_infer_response(r["resp"])[0]["id"] for r in answered]
    assert len(echoed) == len(set(echoed)), "an answer came twice"

    # Only requests in flight at a kill failed.
    def kill_of(r: dict) -> float | None:
        """The kill this failure belongs to: the connection predates it, the
        request failed after it (and started before the next process's ready)."""
        for t in reversed(kills):
            if r["opened"] <= t <= r["end"]:
                return t
        return None

    orphans = [(r["id"], r.get("error")) for r in failed if kill_of(r) is None]
    assert not orphans, f"failures not explained by a kill: {orphans[:5]}"
    per_kill: dict[float, int] = {}
    for r in failed:
        per_kill[kill_of(r)] = per_kill.get(kill_of(r), 0) + 1
    assert max(per_kill.values(), default=0) <= CLIENTS, f"more failures than clients at a kill: {per_kill}"
    assert len(answered) > 20 * KILLS, f"too little load: {len(answered)} answers"

    # The cache file: kept or moved aside, serving continued either way.
    assert (server.data_dir / "cache.redb").exists()
    assert "panicked" not in log, log[-5000:]
    assert samples, "the last nusad was not running at the end"

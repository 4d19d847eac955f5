#!/usr/bin/env python3
"""The side-by-side benchmark: nusad against the peers users would pick
instead, in the same run, interleaved (A B A B ...), reported as medians
with their spread and as ratios. Run through scripts/bench.

    .venv/bin/python bench/run.py [--quick] [--oha PATH] [--rounds N]

Comparisons in this version:
  1. cached responses: nusad's edge cache vs nginx proxy_cache, both over
     TLS; HTTP/1.1 (wrk), HTTP/2 (h2load), closed-loop concurrency sweep and
     open-loop rates (oha, latency-corrected); then nusad over HTTP/3 against
     its own HTTP/2 (oha).
  5. footprint: start-to-ready time, idle RSS, RSS under load.
  4. overload: a slow model (~6 ms a row, one instance) with a second nusad
     as its region, offered 1x, 2x and 3x local capacity open loop (oha),
     spill on against spill off: success rate, p99, spilled share.
  2. inference path: nusad (dynamic batching) against MLServer 1.7.1 with and
     without adaptive batching (a custom runtime wrapping onnxruntime with the
     same threads) and raw onnxruntime in one process (the limit), for
     tiny-cnn and a larger generated model; JSON requests (MLServer has no
     binary extension), wrk over HTTP/1.1.
  3. proxy overhead: requests passed to a regional endpoint (a nusad) through
     nusad (model placement = "region") and through nginx proxy_pass, against
     direct, open loop at fixed rates (oha): added p50 and p99.
  6. hot swaps (bench/swap.py): latency while the model is reloaded every K
     seconds against without, failed requests (any fails the run), load-call
     durations, RSS after 1 swap vs after many; MLServer's reload the same
     way (full mode).
  7. API keys: server CPU per cached request with auth.mode = "keys" against
     the same server without (`--only auth` runs this section alone).
  8. request traces: server CPU per cached request with tracing off, on at
     sample_ratio 0.01 and on at 1.0, exporting over OTLP/HTTP to a receiver
     that discards (`--only tracing` runs this section alone).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import loadtools
import procstat
import swap as swapbench
from benchlib import ROOT, nt, pin, use_release_build
from peers.nginx import Nginx


@dataclass
class System:
    name: str
    url: str
    pids: list[int]
    cacert: Path


@dataclass
class Sample:
    run: loadtools.Run
    server_cpu_s: float
    rss_peak: int

    @property
    def cpu_us_per_req(self) -> float:
        return self.server_cpu_s / max(1, self.run.requests) * 1e6


def measure(system: System, load) -> Sample:
    """Runs one load against one system, with its CPU time and peak RSS."""
    peak = [procstat.rss_bytes(system.pids)]
    stop = threading.Event()

    def watch():
        while not stop.wait(0.1):
            peak[0] = max(peak[0], procstat.rss_bytes(system.pids))

    t = threading.Thread(target=watch, daemon=True)
    cpu0 = procstat.cpu_seconds(system.pids)
    t.start()
    try:
        run = load()
    finally:
        stop.set()
        t.join()
    return Sample(run, procstat.cpu_seconds(system.pids) - cpu0, peak[0])


def med(values):
    return statistics.median(values) if values else 0.0


def spread(values):
    return f"{min(values):.0f}-{max(values):.0f}" if values else "-"


class Report:
    def __init__(self):
        self.lines: list[str] = []
        self.commands: list[str] = []
        self.plots: list[str] = []

    def table(self, title: str, rows: list[tuple[str, dict[str, list[Sample]]]], systems: list[str]) -> None:
        self.lines += [f"### {title}", "",
                       "| case | system | req/s (median, spread) | p50 ms | p90 ms | p99 ms | errors | server CPU us/req | client CPU s/s | RSS MiB | req/s ratio | p99 ratio |",
                       "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for case, by_system in rows:
            base = by_system.get(systems[1], [])
            for s in systems:
                samples = by_system.get(s, [])
                if not samples:
                    continue
                rps = [x.run.rps for x in samples]
                p99 = med([x.run.p99_ms for x in samples])
                ratio_rps = ratio_p99 = ""
                if s == systems[0] and base:
                    ratio_rps = f"{med(rps) / max(1e-9, med([x.run.rps for x in base])):.2f}"
                    ratio_p99 = f"{p99 / max(1e-9, med([x.run.p99_ms for x in base])):.2f}"
                client = med([x.run.client_cpu_s / max(1e-9, x.run.seconds) for x in samples])
                self.lines.append(
                    f"| {case} | {s} | {med(rps):.0f} ({spread(rps)}) | {med([x.run.p50_ms for x in samples]):.2f} | "
                    f"{med([x.run.p90_ms for x in samples]):.2f} | {p99:.2f} | {sum(x.run.errors for x in samples)} | "
                    f"{med([x.cpu_us_per_req for x in samples]):.1f} | {client:.2f} | "
                    f"{med([x.rss_peak for x in samples]) / 2**20:.1f} | {ratio_rps} | {ratio_p99} |")
                self.commands.append(f"- {case}, {s}: `{samples[-1].run.command()}`")
        self.lines.append("")

    def write(self, path: Path, header: list[str]) -> None:
        path.write_text("\n".join(header + self.lines + ["## Command lines (last round of each)", ""]
                                  + self.commands + [""]))


def plot(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, list[tuple[float, float]]]) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        points = sorted(points)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def check_cached(url: str, body: Path, headers: dict[str, str], header: str, want: str) -> None:
    cmd = ["curl", "-sk", "-o", "/dev/null", "-D", "-", "--data-binary", f"@{body}", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    head = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.lower()
    if f"{header}: {want.lower()}" not in head:
        raise SystemExit(f"{url} did not answer from its cache ({header}: {want} expected):\n{head}")


def inference(report: Report, tmp: Path, quick: bool, seconds: float, rounds: int) -> None:
    import json as _json

    import slowmodel as sm
    from peers.mlserver import VENV, MLServer

    if not (VENV / "bin/mlserver").exists():
        report.lines += ["### 2. Inference path", "", f"MLServer not installed at {VENV}: skipped "
                         "(scripts/bench installs it).", ""]
        return
    slow = sm.calibrated()
    (tmp / "slow.onnx").write_bytes(slow.model)
    models = [("tiny-cnn", nt.DEMO_MODEL, nt.golden_rows([0])[0].reshape(1, 3, 32, 32), "input"),
              ("slow-mlp", tmp / "slow.onnx", sm.rows(1, 3), sm.INPUT)]
    sweep = [16] if quick else [1, 4, 16]
    for name, model_file, x, input_name in models:
        body = _json.dumps({"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.reshape(-1).tolist()}]}).encode()
        body_path = tmp / f"{name}.json"
        body_path.write_bytes(body)
        headers = {"Content-Type": "application/json"}
        config = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
        ours = nt.start_server(f"inf-{name}", tmp / f"inf-{name}", {name: ((1,), config)},
                               {"limits": {"max_body_bytes": 1 << 22}}, model_files={name: model_file.read_bytes()})
        peers = {}
        try:
            for label, batching in (("mlserver", False), ("mlserver adaptive", True)):
                peers[label] = MLServer(tmp / f"mls-{name}-{batching}", name, model_file, nt.free_port(),
                                        nt.free_port(), nt.free_port(), batching).start()
            systems = {"nusad": System("nusad", f"https://127.0.0.1:{ours.port}{nt.infer_path(name)}",
                                       [ours.proc.pid], ours.ca_path)}
            for label, p in peers.items():
                systems[label] = System(label, p.url, p.pids(), Path())
            rows = []
            for c in sweep:
                for peer in peers:
                    by: dict[str, list[Sample]] = {"nusad": [], peer: []}
                    for _ in range(rounds):
                        for sysname in ("nusad", peer):
                            s = systems[sysname]
                            by[sysname].append(measure(s, lambda: loadtools.wrk(s.url, body_path, headers, c, seconds)))
                    rows.append((f"{name} c={c}", by))
            raw = {}
            for batch in (1, 16):
                cmd = pin(0) + [str(ROOT / ".venv/bin/python"), str(ROOT / "bench/raw_ort.py"), str(model_file),
                                str(batch), str(seconds)]
                raw[batch] = _json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                                        timeout=seconds + 120).stdout)
        finally:
            for p in peers.values():
                p.stop()
            ours.stop()
        for peer in peers:
            report.table(f"2. Inference path, {name}: nusad (HTTPS) vs {peer} (plain HTTP), wrk HTTP/1.1, JSON",
                         [r for r in rows if peer in r[1]], ["nusad", peer])
        ours_c1 = [r for r in rows if r[0] == f"{name} c=1"]
        overhead = ""
        if ours_c1:
            p50 = med([x.run.p50_ms for x in ours_c1[0][1]["nusad"]])
            overhead = (f" Gateway overhead per request at concurrency 1: nusad p50 {p50:.2f} ms - raw batch-1 "
                        f"{raw[1]['p50_ms']:.2f} ms = {p50 - raw[1]['p50_ms']:.2f} ms (TLS, HTTP, JSON, queue).")
        top = max(med([x.run.rps for x in r[1]["nusad"]]) for r in rows)
        report.lines += [f"Raw onnxruntime, one process, same threads: batch 1 {raw[1]['rows_per_s']:.0f} rows/s "
                         f"(p50 {raw[1]['p50_ms']:.2f} ms), batch 16 {raw[16]['rows_per_s']:.0f} rows/s. nusad's best "
                         f"here {top:.0f} req/s = {top / raw[16]['rows_per_s']:.2f} of the batch-16 limit.{overhead}", ""]


def proxy_overhead(report: Report, tmp: Path, oha_bin: str, quick: bool, seconds: float, rounds: int) -> None:
    x, _ = nt.golden_rows([0])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    body_path = tmp / "proxy-body.bin"
    body_path.write_bytes(body)
    limits = {"limits": {"max_body_bytes": 1 << 20}}
    # The regional endpoint shares the load generator's core, so the proxies
    # under test have the server core to themselves.
    os.environ["NUSAD_WRAP"] = " ".join(pin(1))
    region = nt.start_server("proxy-region", tmp / "proxy-region", {nt.MODEL: ((1,), None)}, limits)
    os.environ["NUSAD_WRAP"] = " ".join(pin(0))
    placed = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
    placed["placement"] = "region"
    config = dict(limits)
    config["spill"] = {"enabled": True, "max_tries": 2, "local_only_clients": [], "probe_interval_ms": 5000}
    config["regions"] = [{"name": "region", "url": f"https://{region.authority}", "ca": str(region.ca_path),
                          "timeout_ms": 5000, "requests_per_hour": 0, "bytes_per_hour": 0}]
    via = nt.start_server("proxy-nusad", tmp / "proxy-nusad", {nt.MODEL: ((1,), placed)}, config)
    nginx_port = nt.free_port()
    nginx = Nginx(tmp / "proxy-nginx", nginx_port, region.data_dir / "tls/server.pem",
                  region.data_dir / "tls/server.key", region.port, cache=False).start()
    path = nt.infer_path()
    systems = {
        "through nusad": System("through nusad", f"https://localhost:{via.port}{path}", [via.proc.pid], via.ca_path),
        "through nginx": System("through nginx", f"https://localhost:{nginx_port}{path}",
                                procstat.tree(nginx.pid), region.ca_path),
        "direct": System("direct", f"https://localhost:{region.port}{path}", [region.proc.pid], region.ca_path),
    }
    try:
        head = subprocess.run(["curl", "-sk", "-D", "-", "-o", "/dev/null", "--data-binary", f"@{body_path}",
                               "-H", f"Inference-Header-Content-Length: {headers['Inference-Header-Content-Length']}",
                               systems["through nusad"].url], capture_output=True, text=True, timeout=30).stdout
        if "nusa-served-by: cloud:region" not in head.lower():
            raise SystemExit(f"nusad did not pass the request to the region:\n{head}")
        rows, lines = [], []
        for rate in ((500,) if quick else (500, 1500)):
            by: dict[str, list[Sample]] = {k: [] for k in systems}
            for _ in range(rounds):
                for name, s in systems.items():
                    by[name].append(measure(s, lambda: loadtools.oha(oha_bin, s.url, body_path, headers, 32, seconds,
                                                                     http="2", rate=rate, cacert=s.cacert)))
            rows.append((f"{rate}/s", by))
            d50, d99 = med([x.run.p50_ms for x in by["direct"]]), med([x.run.p99_ms for x in by["direct"]])
            for name in ("through nusad", "through nginx"):
                lines.append(f"| {rate}/s | {name} | {med([x.run.p50_ms for x in by[name]]) - d50:+.2f} | "
                             f"{med([x.run.p99_ms for x in by[name]]) - d99:+.2f} | "
                             f"{med([x.cpu_us_per_req for x in by[name]]):.1f} |")
        report.table("3. Proxy overhead to a regional endpoint, open loop (oha over HTTP/2; nusad to the region over HTTP/2, nginx over HTTP/1.1 as its upstream module speaks)", rows,
                     ["through nusad", "through nginx", "direct"])
        report.lines += ["| rate | path | added p50 ms | added p99 ms | proxy CPU us/req |", "|---|---|---|---|---|"]
        report.lines += lines + [""]
    finally:
        nginx.stop()
        via.stop()
        region.stop()


def overload(report: Report, tmp: Path, oha_bin: str, quick: bool, seconds: float, rounds: int) -> None:
    import slowmodel as sm
    import spilltest as st

    slow = sm.calibrated()
    os.environ["NUSAD_WRAP"] = " ".join(pin(1))
    region = st.start_region(tmp / "region", slow)
    os.environ["NUSAD_WRAP"] = " ".join(pin(0))
    mains = {}
    try:
        work = st.Workload.make(slow)
        row_s = st.measure_row_s(region, work)
        slo = st.slo_for(row_s)
        regions = [st.region_entry("sg-1", region)]
        mains["spill on"] = st.start_main(tmp / "on", slow, regions, slo_ms=slo, name="main-on")
        mains["spill off"] = st.start_main(tmp / "off", slow, regions, slo_ms=slo, spill={"enabled": False},
                                           name="main-off")
        for m in mains.values():
            st.warm_up(m, work)
        body, headers = work.bodies[0]
        body_path = tmp / "slow-body.json"
        body_path.write_bytes(body)
        capacity = 1.0 / row_s
        rows = []
        share_lines = []
        for mult in ((2,) if quick else (1, 2, 3)):
            rate = round(mult * capacity)
            by: dict[str, list[Sample]] = {"spill on": [], "spill off": []}
            spilled = []
            for _ in range(rounds):
                for name in ("spill on", "spill off"):
                    m = mains[name]
                    before = nt.scrape_metrics(m)
                    sys_ = System(name, f"https://localhost:{m.port}{nt.infer_path(st.SLOW)}", [m.proc.pid], m.ca_path)
                    sample = measure(sys_, lambda: loadtools.oha(oha_bin, sys_.url, body_path, headers, 128, seconds,
                                                                 http="2", rate=rate, cacert=m.ca_path))
                    by[name].append(sample)
                    if name == "spill on":
                        n = st.spilled(nt.scrape_metrics(m), st.SLOW) - st.spilled(before, st.SLOW)
                        spilled.append(n / max(1, sample.run.requests + sample.run.errors))
            rows.append((f"{mult}x local capacity ({rate}/s)", by))
            ok = {k: med([x.run.requests / max(1, x.run.requests + x.run.errors) for x in v]) for k, v in by.items()}
            share_lines.append(f"| {mult}x ({rate}/s) | {ok['spill on']:.1%} | {ok['spill off']:.1%} | "
                               f"{med(spilled):.1%} |")
        report.table(f"4. Overload, open loop (slow model, one instance; slo_ms {slo}; region: a second nusad "
                     f"on the other core)", rows, ["spill on", "spill off"])
        report.lines += [f"Local capacity taken as 1 / idle request time = {capacity:.0f}/s "
                         f"({slow.describe()}). 'errors' above are mostly 503 queue full.", "",
                         "| offered | success, spill on | success, spill off | spilled share |", "|---|---|---|---|"]
        report.lines += share_lines + [""]
    finally:
        for m in mains.values():
            m.stop()
        region.stop()


def auth_cost(report: Report, tmp: Path, quick: bool, seconds: float, rounds: int) -> None:
    """What an API key costs per request: the same cache hits on a server
    with `auth.mode = "keys"` (key checked, its rate and concurrency limits
    counted) and on one without, interleaved, server CPU per request."""
    x, _ = nt.golden_rows([0])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    body_path = tmp / "auth-body.bin"
    body_path.write_bytes(body)
    cached = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
    cached["cache"] = {"enabled": True, "ttl_s": 3600}
    limits = {"limits": {"max_body_bytes": 1 << 20}}
    open_ = nt.start_server("open", tmp / "auth-open", {nt.MODEL: ((1,), cached)}, limits)
    keyed = nt.start_server("keys", tmp / "auth-keys", {nt.MODEL: ((1,), cached)},
                            {**limits, "auth": {"mode": "keys"}})
    try:
        nusactl = os.environ.get("NUSACTL_BIN", str(nt.cargo_build_dir("release") / "nusactl"))
        out = subprocess.run([nusactl, "keys", "--socket", str(keyed.admin_socket), "create", "bench",
                              "--rps", "1000000", "--burst", "1000000", "--max-concurrent", "10000", "--json"],
                             capture_output=True, text=True, check=True)
        key = json.loads(out.stdout)["secret"]
        path = nt.infer_path()
        systems = {
            "keys": (System("keys", f"https://127.0.0.1:{keyed.port}{path}", [keyed.proc.pid], keyed.ca_path),
                     {**headers, "Authorization": f"Bearer {key}"}),
            "open": (System("open", f"https://127.0.0.1:{open_.port}{path}", [open_.proc.pid], open_.ca_path),
                     headers),
        }
        for s, h in systems.values():
            loadtools.wrk(s.url, body_path, h, 1, 1)
            check_cached(s.url, body_path, h, "nusa-served-by", "cache")
        by: dict[str, list[Sample]] = {"keys": [], "open": []}
        for _ in range(rounds):
            for name in ("keys", "open"):
                s, h = systems[name]
                by[name].append(measure(s, lambda: loadtools.wrk(s.url, body_path, h, 16, seconds)))
        report.table("7. API keys: cache hits with auth.mode = \"keys\" (a key with rate and concurrency limits) "
                     "against the same server without (HTTP/1.1, c=16)", [("cache hit", by)], ["keys", "open"])
        extra = med([x.cpu_us_per_req for x in by["keys"]]) - med([x.cpu_us_per_req for x in by["open"]])
        report.lines += [f"Server CPU per request added by the key check and its limits: {extra:.1f} us "
                         "(median of rounds; the in-process figure is `cargo run --release -p nusa-auth "
                         "--example auth_cost`).", ""]
    finally:
        keyed.stop()
        open_.stop()


def tracing_cost(report: Report, tmp: Path, quick: bool, seconds: float, rounds: int) -> None:
    """What request traces cost per request: the same cache hits on a server
    with tracing off, one recording every request and exporting 1% of them,
    and one exporting all, interleaved, server CPU per request (the exporter
    thread's included: it is nusad's). The receiver (otlp_receiver.py, which
    counts and discards) runs beside the load generator, off the server's core."""
    x, _ = nt.golden_rows([0])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    body_path = tmp / "tracing-body.bin"
    body_path.write_bytes(body)
    cached = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
    cached["cache"] = {"enabled": True, "ttl_s": 3600}
    limits = {"limits": {"max_body_bytes": 1 << 20}}
    receiver = subprocess.Popen(pin(1) + [sys.executable, str(ROOT / "tests/integration/otlp_receiver.py")],
                                stdout=subprocess.PIPE, text=True)
    servers: dict[str, nt.NusadServer] = {}
    try:
        endpoint = f"http://127.0.0.1:{int(receiver.stdout.readline())}"
        # The last also leaves out Server-Timing (on by default): what the
        # header itself costs.
        tables = {"off": {}, "on 1%": {"otlp_endpoint": endpoint, "sample_ratio": 0.01},
                  "on 100%": {"otlp_endpoint": endpoint, "sample_ratio": 1.0},
                  "off, no Server-Timing": {"server_timing": False}}
        for name, table in tables.items():
            config = dict(limits)
            if table:
                config["tracing"] = table
            slug = "".join(c if c.isalnum() else "-" for c in name)
            servers[name] = nt.start_server(slug, tmp / f"tracing-{slug}", {nt.MODEL: ((1,), cached)}, config)
        path = nt.infer_path()
        systems = {name: System(name, f"https://127.0.0.1:{srv.port}{path}", [srv.proc.pid], srv.ca_path)
                   for name, srv in servers.items()}
        for sys_ in systems.values():
            loadtools.wrk(sys_.url, body_path, headers, 1, 1)
            check_cached(sys_.url, body_path, headers, "nusa-served-by", "cache")
        by: dict[str, list[Sample]] = {name: [] for name in systems}
        for _ in range(rounds):
            for name, sys_ in systems.items():
                by[name].append(measure(sys_, lambda: loadtools.wrk(sys_.url, body_path, headers, 16, seconds)))
        report.table("8. Request traces: cache hits with tracing off, on at sample_ratio 0.01 and on at 1.0 "
                     "(OTLP/HTTP to a receiver on the load generator's core; HTTP/1.1, c=16)",
                     [("cache hit, on 1%", {"on": by["on 1%"], "off": by["off"]}),
                      ("cache hit, on 100%", {"on": by["on 100%"], "off": by["off"]}),
                      ("cache hit, Server-Timing", {"on": by["off"], "off": by["off, no Server-Timing"]})],
                     ["on", "off"])
        off = med([x.cpu_us_per_req for x in by["off"]])
        report.lines += ["| tracing | server CPU us/req (median) | added per request | spans exported | "
                         "spans dropped (queue full / export failed / buffer full) | traces kept / dropped |",
                         "|---|---|---|---|---|---|"]
        for name in tables:
            cpu = med([x.cpu_us_per_req for x in by[name]])
            m = nt.scrape_metrics(servers[name])
            total = lambda n, **kv: nt.metric_sum(m, n, **kv)  # noqa: E731
            dropped = " / ".join(f"{total('nusa_trace_spans_dropped_total', reason=r):.0f}"
                                 for r in ("queue_full", "export_failed", "buffer_full"))
            kept = sum(total("nusa_trace_traces_total", verdict=v) for v in ("sampled", "slow", "failed"))
            report.lines.append(f"| {name} | {cpu:.1f} | {cpu - off:+.1f} us | "
                                f"{total('nusa_trace_spans_exported_total'):.0f} | {dropped} | "
                                f"{kept:.0f} / {total('nusa_trace_traces_total', verdict='dropped'):.0f} |")
        report.lines += ["", "'off' has Server-Timing (the default); the last row has neither.",
                         "", "Every request is recorded when tracing is on (the tail decision needs its "
                         "spans: a slow or failed one is kept whatever the ratio), so 1% costs nearly what "
                         "100% does on the request path; the difference is the export, which runs on its "
                         "own thread.", ""]
    finally:
        for srv in servers.values():
            srv.stop()
        receiver.kill()
        receiver.wait()


def start_to_ready(tmp: Path, n: int) -> list[float]:
    """Seconds from spawn to a 200 from /v2/health/ready, bundled demo model."""
    out = []
    for i in range(n):
        s = nt.NusadServer(f"ready-{i}", tmp / f"ready-{i}", None)
        t0 = time.perf_counter()
        s.start()
        out.append(time.perf_counter() - t0)
        s.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few seconds per comparison (CI)")
    ap.add_argument("--oha", default=str(ROOT / ".cache/oha/bin/oha"))
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="per run (default 8, quick 2)")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--only", choices=["auth", "tracing"],
                    help="run one section only (its report file says so)")
    args = ap.parse_args()
    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    seconds = args.seconds or (2 if quick else 8)
    sweep = [16] if quick else [1, 4, 16, 64]
    use_release_build()
    if not Path(os.environ["NUSAD_BIN"]).exists():
        raise SystemExit(f"no release build at {os.environ['NUSAD_BIN']}: cargo build --release -p nusad")
    oha_bin = args.oha if Path(args.oha).exists() else shutil.which("oha")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.date.today().isoformat() + ("-quick" if quick else "")
    report = Report()
    if args.only == "auth":
        with tempfile.TemporaryDirectory() as tmp_s:
            auth_cost(report, Path(tmp_s), quick, seconds, rounds)
        out = out_dir / f"{stamp}-auth.md"
        report.write(out, [f"# API key cost ({stamp})", "",
                           f"`.venv/bin/python bench/run.py --only auth{' --quick' if quick else ''}`; "
                           f"{rounds} rounds of {seconds:.0f} s, release build, server on core 0, wrk on core 1 "
                           f"of {os.cpu_count()}.", ""])
        print(out.read_text())
        return 0
    if args.only == "tracing":
        with tempfile.TemporaryDirectory() as tmp_s:
            tracing_cost(report, Path(tmp_s), quick, seconds, rounds)
        out = out_dir / f"{stamp}-tracing.md"
        report.write(out, [f"# Request trace cost ({stamp})", "",
                           f"`.venv/bin/python bench/run.py --only tracing{' --quick' if quick else ''}`; "
                           f"{rounds} rounds of {seconds:.0f} s, release build, server on core 0, wrk and the "
                           f"OTLP receiver on core 1 of {os.cpu_count()}.", ""])
        print(out.read_text())
        return 0

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        x, _ = nt.golden_rows([0])
        body, headers = nt.binary_infer_request(x, binary_output=True)
        body_path = tmp / "body.bin"
        body_path.write_bytes(body)
        cached_model = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
        cached_model["cache"] = {"enabled": True, "ttl_s": 3600}
        limits = {"limits": {"max_body_bytes": 1 << 20}}
        ours = nt.start_server("ours", tmp / "ours", {nt.MODEL: ((1,), cached_model)}, limits)
        # nginx's upstream: the same gateway without a cache, off the server core.
        os.environ["NUSAD_WRAP"] = " ".join(pin(1))
        upstream = nt.start_server("upstream", tmp / "upstream", {nt.MODEL: ((1,), None)}, limits)
        os.environ["NUSAD_WRAP"] = " ".join(pin(0))
        nginx_port = nt.free_port()
        nginx = Nginx(tmp / "nginx", nginx_port, upstream.data_dir / "tls/server.pem",
                      upstream.data_dir / "tls/server.key", upstream.port, cache=True).start()
        path = nt.infer_path()
        systems = {
            "nusad": System("nusad", f"https://127.0.0.1:{ours.port}{path}", [ours.proc.pid], ours.ca_path),
            "nginx": System("nginx", f"https://127.0.0.1:{nginx_port}{path}", procstat.tree(nginx.pid),
                            upstream.ca_path),
        }
        try:
            # Fill both caches, then check that both really answer from them:
            # a comparison against a peer that proxies every request would
            # flatter us.
            for s in systems.values():
                loadtools.wrk(s.url, body_path, headers, 1, 1)
            check_cached(systems["nusad"].url, body_path, headers, "nusa-served-by", "cache")
            check_cached(systems["nginx"].url, body_path, headers, "x-cache", "HIT")
            rows, h1_points, h2_points = [], {"nusad": [], "nginx": []}, {"nusad": [], "nginx": []}
            for proto, tool in [("HTTP/1.1", loadtools.wrk), ("HTTP/2", loadtools.h2load)]:
                for c in sweep:
                    by: dict[str, list[Sample]] = {"nusad": [], "nginx": []}
                    for _ in range(rounds):
                        for name in ("nusad", "nginx"):  # A B A B ...
                            s = systems[name]
                            by[name].append(measure(s, lambda: tool(s.url, body_path, headers, c, seconds)))
                    rows.append((f"{proto} c={c}", by))
                    for name in by:
                        (h1_points if proto == "HTTP/1.1" else h2_points)[name].append((c, med([x.run.rps for x in by[name]])))
            report.table("1. Cached responses, closed loop (nusad edge cache vs nginx proxy_cache)", rows, ["nusad", "nginx"])
            if oha_bin:
                # Open loop at fractions of the slower system's HTTP/2 peak.
                peak = min(max(v for _, v in h2_points[n]) for n in h2_points)
                rates = [round(peak * f) for f in ((0.5,) if quick else (0.25, 0.5, 0.75))]
                rows, lat_points = [], {"nusad": [], "nginx": []}
                for rate in rates:
                    by = {"nusad": [], "nginx": []}
                    for _ in range(rounds):
                        for name in ("nusad", "nginx"):
                            s = systems[name]
                            by[name].append(measure(s, lambda: loadtools.oha(
                                oha_bin, s.url.replace("127.0.0.1", "localhost"), body_path, headers, 16, seconds,
                                http="2", rate=rate, cacert=s.cacert)))
                    rows.append((f"HTTP/2 open loop {rate}/s", by))
                    for name in by:
                        lat_points[name].append((rate, med([x.run.p99_ms for x in by[name]])))
                report.table("1b. Cached responses, open loop at fixed rates (oha, latency-corrected)", rows, ["nusad", "nginx"])
                rows = []
                by = {"nusad HTTP/3": [], "nusad HTTP/2": []}
                s = systems["nusad"]
                for _ in range(rounds):
                    for label, http in (("nusad HTTP/3", "3"), ("nusad HTTP/2", "2")):
                        by[label].append(measure(s, lambda: loadtools.oha(
                            oha_bin, s.url.replace("127.0.0.1", "localhost"), body_path, headers, 16, seconds,
                            http=http, cacert=s.cacert)))
                rows.append(("cached, c=16 (oha)", by))
                report.table("1c. nusad over HTTP/3 against its own HTTP/2 (oha both)", rows, ["nusad HTTP/3", "nusad HTTP/2"])
                if plot(out_dir / f"{stamp}-open-loop-p99.png", "Cached responses: p99 vs offered rate (HTTP/2)",
                        "offered rate (req/s)", "p99 latency (ms)", lat_points):
                    report.plots.append(f"{stamp}-open-loop-p99.png")
            else:
                report.lines += ["oha not found: open-loop and HTTP/3 rows skipped (scripts/bench installs it).", ""]
            if plot(out_dir / f"{stamp}-closed-loop.png", "Cached responses: throughput vs concurrency",
                    "concurrent connections", "req/s",
                    {f"{n} {p}": pts for p, d in (("h1", h1_points), ("h2", h2_points)) for n, pts in d.items()}):
                report.plots.append(f"{stamp}-closed-loop.png")

            idle_ours = procstat.rss_bytes(systems["nusad"].pids)
            idle_nginx = procstat.rss_bytes(systems["nginx"].pids)
        finally:
            nginx.stop()
            upstream.stop()
            ours.stop()
        inference(report, tmp, quick, seconds, rounds)
        auth_cost(report, tmp, quick, seconds, rounds)
        tracing_cost(report, tmp, quick, seconds, rounds)
        if oha_bin:
            proxy_overhead(report, tmp, oha_bin, quick, seconds, rounds)
            overload(report, tmp, oha_bin, quick, seconds, rounds)
        else:
            report.lines += ["oha not found: the proxy-overhead and overload sections (open loop) skipped "
                             "(scripts/bench without --quick installs it).", ""]
        ready = start_to_ready(tmp, 2 if quick else 5)
        report.lines += [
            "### 5. Footprint", "",
            "| figure | nusad | nginx |", "|---|---|---|",
            f"| RSS after the runs, idle (MiB) | {idle_ours / 2**20:.1f} | {idle_nginx / 2**20:.1f} (master + worker) |",
            f"| start to ready, bundled demo model (s, median of {len(ready)}) | {med(ready):.3f} | - |", ""]
        swaps = swapbench.run(tmp / "swap", quick, mlserver=not quick)
        report.lines += swapbench.section(swaps)

    header = [f"# Benchmark, {stamp}", "",
              f"Machine: {os.cpu_count()} cores; server pinned to core 0, load generator to core 1 "
              f"({'taskset' if pin(0) else 'not pinned: one core'}). Release build. {rounds} round(s) per case, "
              f"interleaved nusad / peer; {seconds} s per run; medians with the spread of rounds (min-max). "
              "Ratios are nusad / peer (req/s: higher is better; p99: lower is better). "
              "'client CPU s/s' is the load generator's CPU seconds per second of run: near 1.0 means the "
              "client was the limit, not the server.", "",
              "Request: tiny-cnn, one row, binary tensors (12 KiB in, 40 B out), the same request every time.", ""]
    header += [f"![{p}]({p})" for p in report.plots] + [""]
    out = out_dir / f"{stamp}.md"
    report.write(out, header)
    print(f"wrote {out}")
    if swapbench.failed(swaps):
        print("hot swaps: failed requests or harness error, see section 6 of the report", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

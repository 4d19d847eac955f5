#!/usr/bin/env python3
"""Quick gateway measurement (issue 2's closing note): requests per second
and p50/p99 latency for tiny-cnn over HTTP/2 and HTTP/3, batching on and
off, with oha as the load generator. Not the side-by-side benchmark with
peers (that is scripts/bench, its own issue).

    .venv/bin/python bench/quick-gateway.py --oha /path/to/oha [--seconds 10]

Needs a release build (cargo build --release -p nusad) and oha built with
its http3 feature (cargo install oha --features http3 --locked). With two or
more cores the server is pinned to core 0 and oha to core 1.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/integration"))
import nusatest as nt  # noqa: E402


def pin(core):
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else []


def run_oha(oha, server, body_path, headers, http, conns, seconds):
    cmd = pin(1) + [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
                    "-m", "POST", "-D", str(body_path), "--cacert", str(server.ca_path),
                    "--http-version", http]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"https://localhost:{server.port}{nt.infer_path()}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr}")
    r = json.loads(out.stdout)
    codes = r.get("statusCodeDistribution", {})
    return {
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": r["latencyPercentiles"]["p50"] * 1000,
        "p99_ms": r["latencyPercentiles"]["p99"] * 1000,
        "ok": codes.get("200", 0),
        # oha cuts the requests in flight at the deadline; those are not errors.
        "errors": sum(v for k, v in codes.items() if k != "200")
        + sum(v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k),
        "cmd": " ".join(cmd),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oha", default=shutil.which("oha") or "oha")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    binary = ROOT / "target/release/nusad"
    os.environ.setdefault("NUSAD_BIN", str(binary))
    x, _ = nt.golden_rows([0])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.bin"
        body_path.write_bytes(body)
        for label, batching in [
            ("on, delay 0", nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024)),
            ("on, delay 500us", nt.batching(max_batch_size=32, max_queue_delay_us=500, max_queue_size=1024)),
            ("off", nt.batching(max_batch_size=0, max_queue_delay_us=0, max_queue_size=1024)),
        ]:
            os.environ["NUSAD_WRAP"] = " ".join(pin(0))
            slug = label.replace(" ", "").replace(",", "-")
            server = nt.start_server(f"bench-{slug}", Path(tmp) / slug, {nt.MODEL: ((1,), batching)},
                                     {"limits": {"max_body_bytes": 1 << 20}})
            try:
                for http in ["2", "3"]:
                    for c in [int(v) for v in args.concurrency.split(",")]:
                        r = run_oha(args.oha, server, body_path, headers, http, c, args.seconds)
                        rows.append((label, f"HTTP/{http}", c, r))
                        print(f"batching {label:15} HTTP/{http} c={c:3}: {r['rps']:8.0f} req/s  "
                              f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}", flush=True)
                        time.sleep(1)
            finally:
                server.stop()
    lines = [f"# Quick gateway measurement, {datetime.date.today()}", "",
             f"tiny-cnn, one row per request (binary tensors in and out), {args.seconds} s per cell, "
             f"release build, server on core 0 and oha on core 1 of {os.cpu_count()} cores.", "",
             "| batching | protocol | concurrency | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    for label, proto, c, r in rows:
        lines.append(f"| {label} | {proto} | {c} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", "Commands (oha):", ""] + [f"- `{r['cmd']}`" for *_, r in rows]
    out = ROOT / "bench/results" / f"quick-gateway-{datetime.date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Quick gateway measurement (the gateway-core issue's closing note):
requests per second and p50/p99 latency for tiny-cnn over HTTP/2 and HTTP/3,
batching on and off, with oha as the load generator. Not the side-by-side
benchmark with peers (that is scripts/bench, its own issue).

    .venv/bin/python bench/quick-gateway.py --oha /path/to/oha [--seconds 10]

Needs a release build (cargo build --release -p nusad) and oha built with
its http3 feature (cargo install oha --features http3 --locked). With two or
more cores the server is pinned to core 0 and oha to core 1.
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import nt, run_oha, use_release_build, write_report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oha", default=shutil.which("oha") or "oha")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    use_release_build()
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
            slug = label.replace(" ", "").replace(",", "-")
            server = nt.start_server(f"bench-{slug}", Path(tmp) / slug, {nt.MODEL: ((1,), batching)},
                                     {"limits": {"max_body_bytes": 1 << 20}})
            try:
                for http in ["2", "3"]:
                    for c in [int(v) for v in args.concurrency.split(",")]:
                        r = run_oha(args.oha, server, body_path, headers, http, c, args.seconds)
                        rows.append(([label, f"HTTP/{http}", c], r))
                        print(f"batching {label:15} HTTP/{http} c={c:3}: {r['rps']:8.0f} req/s  "
                              f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}", flush=True)
                        time.sleep(1)
            finally:
                server.stop()
    write_report("quick-gateway", "Quick gateway measurement",
                 f"tiny-cnn, one row per request (binary tensors in and out), {args.seconds} s per cell, "
                 f"release build, server on core 0 and oha on core 1 of {os.cpu_count()} cores.",
                 ["batching", "protocol", "concurrency"], rows)


if __name__ == "__main__":
    main()

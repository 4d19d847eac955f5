#!/usr/bin/env python3
"""Quick edge-cache measurement (the cache-and-spill issue's closing note):
tiny-cnn answered from the edge cache (every request identical: all hits
after the first) against the uncached path on the same server (the same
request with `Cache-Control: no-store`), over HTTP/2 and HTTP/3, with oha.
The side-by-side with nginx proxy_cache is the benchmark issue's.

    .venv/bin/python bench/quick-cache.py --oha /path/to/oha [--seconds 8]
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
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--concurrency", default="1,16")
    args = ap.parse_args()
    use_release_build()
    x, _ = nt.golden_rows([0])
    body, headers = nt.binary_infer_request(x, binary_output=True)
    config = dict(nt.batching(max_batch_size=32, max_queue_delay_us=0, max_queue_size=1024))
    config["cache"] = {"enabled": True, "ttl_s": 3600}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.bin"
        body_path.write_bytes(body)
        server = nt.start_server("bench-cache", Path(tmp) / "s", {nt.MODEL: ((1,), config)},
                                 {"limits": {"max_body_bytes": 1 << 20}})
        try:
            for http in ["2", "3"]:
                for c in [int(v) for v in args.concurrency.split(",")]:
                    for label, extra in [("cache hit", {}), ("uncached (no-store)", {"Cache-Control": "no-store"})]:
                        r = run_oha(args.oha, server, body_path, {**headers, **extra}, http, c, args.seconds)
                        rows.append(([label, f"HTTP/{http}", c], r))
                        print(f"{label:20} HTTP/{http} c={c:3}: {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                              f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}", flush=True)
                        time.sleep(1)
            text = nt.scrape_metrics(server)
            hits = nt.metric_sum(text, "nusa_cache_hits_total", model=nt.MODEL)
            print(f"cache hits counted by the server: {hits:.0f}")
        finally:
            server.stop()
    write_report("quick-cache", "Quick edge-cache measurement",
                 f"tiny-cnn, one row per request (binary tensors), the same request every time; {args.seconds} s "
                 f"per cell, release build, server on core 0 and oha on core 1 of {os.cpu_count()} cores.",
                 ["path", "protocol", "concurrency"], rows)


if __name__ == "__main__":
    main()

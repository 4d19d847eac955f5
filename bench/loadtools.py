"""The load generators the benchmark drives, each run as a child process so
its CPU time can be read (os.wait4), pinned to the load core.

- wrk (HTTP/1.1, closed loop),
- h2load (HTTP/2, closed loop; per-request latencies from its --log-file),
- oha (HTTP/2 and HTTP/3, closed loop and open loop at a fixed rate with
  --latency-correction, which avoids coordinated omission).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import pin


@dataclass
class Run:
    tool: str
    cmd: list[str]
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    client_cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def command(self) -> str:
        return " ".join(self.cmd)


def _spawn(cmd: list[str], timeout: float) -> tuple[str, str, float]:
    """Runs cmd; returns stdout, stderr and its CPU seconds (user + system)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:
            p.kill()
            raise
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0] if not cmd[0].startswith('taskset') else cmd[3]} failed "
                           f"({p.returncode}): {stderr[-2000:]}{stdout[-2000:]}")
    del timeout
    return stdout, stderr, usage.ru_utime + usage.ru_stime


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def wrk(url: str, body: Path, headers: dict[str, str], conns: int, seconds: float) -> Run:
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    # wrk.body is a Lua string: read the file as bytes.
    lua.write_text(f'wrk.method = "POST"\nlocal f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\n'
                   f'f:close()\n{hdrs}')
    cmd = pin(1) + ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(lua), url]
    out, _, cpu = _spawn(cmd, seconds + 60)
    lua.unlink()
    run = Run("wrk", cmd, client_cpu_s=cpu)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    unit = {"s": 1.0, "ms": 1e-3, "m": 60.0}[m.group(3)]
    run.requests, run.seconds = int(m.group(1)), float(m.group(2)) * unit
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    run.errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)

    def ms(q):
        lm = re.search(rf"\s{q}%\s+([\d.]+)(us|ms|s)", out)
        return float(lm.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lm.group(2)] if lm else 0.0

    run.p50_ms, run.p90_ms, run.p99_ms = ms(50), ms(90), ms(99)
    return run


def h2load(url: str, body: Path, headers: dict[str, str], conns: int, seconds: float) -> Run:
    log = Path(tempfile.mkstemp(suffix=".log")[1])
    cmd = pin(1) + ["h2load", "-c", str(conns), "-m", "1", "-t", "1", "-D", str(int(seconds)),
                    "-d", str(body), f"--log-file={log}"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    out, _, cpu = _spawn(cmd, seconds + 60)
    run = Run("h2load", cmd, client_cpu_s=cpu)
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not (m and s and r):
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    run.seconds = float(m.group(1)) * {"s": 1.0, "ms": 1e-3}[m.group(2)]
    run.requests = int(s.group(1))
    run.errors = int(r.group(5)) + int(r.group(6)) + int(s.group(3)) + int(s.group(4))
    lat = sorted(int(line.split()[2]) / 1000.0 for line in log.read_text().splitlines() if line.strip())
    log.unlink()
    run.p50_ms, run.p90_ms, run.p99_ms = (_percentile(lat, q) for q in (50, 90, 99))
    return run


def oha(oha_bin: str, url: str, body: Path, headers: dict[str, str], conns: int, seconds: float,
        http: str = "2", rate: float | None = None, cacert: Path | None = None) -> Run:
    cmd = pin(1) + [oha_bin, "--no-tui", "--output-format", "json", "-z", f"{seconds:g}s", "-c", str(conns),
                    "-m", "POST", "-D", str(body), "--http-version", http]
    cmd += ["--cacert", str(cacert)] if cacert else ["--insecure"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(url)
    out, _, cpu = _spawn(cmd, seconds + 60)
    r = json.loads(out)
    run = Run("oha", cmd, client_cpu_s=cpu)
    codes = r.get("statusCodeDistribution", {})
    run.requests = codes.get("200", 0)
    run.errors = (sum(v for k, v in codes.items() if k != "200")
                  + sum(v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k))
    run.seconds = r["summary"]["total"]
    p = r["latencyPercentiles"]
    run.p50_ms, run.p90_ms, run.p99_ms = p["p50"] * 1000, p["p90"] * 1000, p["p99"] * 1000
    return run

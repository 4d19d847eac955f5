"""Shared by the quick benchmark scripts: pinning, oha runs, result tables."""
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/integration"))
import nusatest as nt  # noqa: E402,F401  (re-exported for the scripts)


def pin(core):
    """taskset prefix for one core, where there are two or more."""
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else []


def use_release_build():
    os.environ.setdefault("NUSAD_BIN", str(nt.cargo_build_dir("release") / "nusad"))
    os.environ["NUSAD_WRAP"] = " ".join(pin(0))


def run_oha(oha, server, body_path, headers, http, conns, seconds, path=None):
    cmd = pin(1) + [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
                    "-m", "POST", "-D", str(body_path), "--cacert", str(server.ca_path),
                    "--http-version", http]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"https://localhost:{server.port}{path or nt.infer_path()}")
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


def write_report(name, title, intro, columns, rows):
    """rows: (list of leading cells, result dict)."""
    lines = [f"# {title}, {datetime.date.today()}", "", intro, "",
             "| " + " | ".join(columns + ["req/s", "p50 ms", "p99 ms", "errors"]) + " |",
             "|" + "---|" * (len(columns) + 4)]
    for cells, r in rows:
        lines.append("| " + " | ".join(str(c) for c in cells)
                     + f" | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", "Commands (oha):", ""] + [f"- `{r['cmd']}`" for _, r in rows]
    out = ROOT / "bench/results" / f"{name}-{datetime.date.today()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")

"""The monitoring files in ops/ against the real thing.

- promtool checks the alerting rules and runs their unit tests
  (ops/prometheus/nusa-alerts.test.yml);
- a real nusad (with a region, the response cache, a model that fails to
  load and the updater's textfile after a failed update) gets good and bad
  requests, and `scripts/ops-check URL` runs `promtool check metrics` over
  its /metrics;
- a real Prometheus scrapes that nusad every second with the rules loaded:
  every nusa_* metric the rules and the dashboard name must be there (or be
  listed below, with why the test cannot make it, and be in the source),
  the rules load healthy, the alerts the set-up causes go pending and no
  other does, and every dashboard query evaluates.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(240)

OPS = nt.REPO_ROOT / "ops"
RULES = OPS / "prometheus" / "nusa-alerts.yml"
RULE_TESTS = OPS / "prometheus" / "nusa-alerts.test.yml"
DASHBOARD = OPS / "grafana" / "nusa-dashboard.json"
OPS_CHECK = nt.REPO_ROOT / "scripts" / "ops-check"
GATEWAY = nt.REPO_ROOT / "gateway"

PLACED = "placed-cnn"     # tiny-cnn with placement = "region": every request spills
BROKEN = "broken-model"   # a model file that is not ONNX: never ready
REGION = "sg-1"
JOB = "nusad"

# Metrics the rules or the dashboard use that this test cannot make appear,
# with why. Each must still be written in the source under gateway/ (a
# registration or the text a process writes), so a misspelling fails.
NOT_MADE_HERE = {
    "nusa_model_drift_drifted": "a drift verdict needs a baseline and a closed window of sampled "
                                "requests (gateway/drift/src/driver/metrics.rs); "
                                "test_drift.py makes one",
    "nusa_update_bytes": "the updater writes it only while it downloads a release or writes a "
                         "slot (gateway/ota/src/runner.rs); the failed update made here writes "
                         "its state alone",
}

# Alerts the set-up below causes; they must be pending (or firing).
EXPECTED_ALERTS = {
    "NusaModelNotReady": {"model": BROKEN},
    "NusaUpdateFailed": {"state": "Failed"},
}
# An alert about this machine rather than the set-up: allowed either way.
MAY_FIRE = {"NusaDiskAlmostFull"}

METRIC_RE = re.compile(r"\bnusa_[a-z0-9_]+")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: install Debian's prometheus package (scripts/setup)"
    return path


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    assert path, "prometheus not found: install Debian's prometheus package (scripts/setup)"
    return path


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, cwd=nt.REPO_ROOT)


# --------------------------------------------------------------------------
# What the rules and the dashboard use


def rule_names() -> set[str]:
    return set(re.findall(r"^\s*- alert:\s*(\S+)\s*$", RULES.read_text(), re.M))


def dashboard_queries() -> list[str]:
    """Every PromQL expression in the dashboard: the panels' targets and the
    template variables' queries."""
    dash = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            exprs.append(q)
    return exprs


def used_metrics() -> set[str]:
    """The nusa_* names in the rules file (expressions, and what the
    annotations and comments tell operators to look at) and in the
    dashboard's queries, as Prometheus stores them (nusa_x_total, nusa_x_bucket)."""
    names = set(METRIC_RE.findall(RULES.read_text()))
    for q in dashboard_queries():
        names |= set(METRIC_RE.findall(q))
    return names


def family(series: str) -> str:
    """The family a stored series name belongs to, as the source registers it
    (prometheus-client adds _total to counters; histograms add _bucket, _sum
    and _count)."""
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if series.endswith(suffix):
            return series[: -len(suffix)]
    return series


def in_source(series: str) -> list[str]:
    """Source files under gateway/ that name the metric: its family registered
    without the nusa_ prefix ("cache_hits"), or the full name in a text a
    process writes (nusa_update_bytes)."""
    fam = family(series)
    short = fam[len("nusa_"):]
    found = []
    for path in GATEWAY.glob("*/src/**/*.rs"):
        text = path.read_text(errors="replace")
        if f'"{short}"' in text or re.search(rf"\b{re.escape(fam)}\b", text):
            found.append(str(path.relative_to(nt.REPO_ROOT)))
    return found


def test_the_dashboard_uses_a_datasource_variable():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables.get("datasource", {}).get("type") == "datasource", variables.keys()
    assert variables["datasource"]["query"] == "prometheus"

    def walk(panels: list[dict]) -> Iterator[dict]:
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for p in walk(dash["panels"]):
        if p.get("type") == "row":
            continue
        sources = [p.get("datasource")] + [t.get("datasource") for t in p.get("targets", [])]
        for s in sources:
            assert s == {"type": "prometheus", "uid": "${datasource}"}, \
                f"panel {p.get('title')!r}: datasource {s!r}, expected the ${{datasource}} variable"
    assert dashboard_queries(), "no queries in the dashboard"


def test_every_exemption_is_used_and_in_the_source():
    used = used_metrics()
    for name, why in NOT_MADE_HERE.items():
        assert name in used, f"{name} is exempted ({why}) but neither the rules nor the dashboard use it"
        assert in_source(name), f"{name} ({why}) is not in any source file under gateway/: misspelt?"


# --------------------------------------------------------------------------
# promtool on the rules


def test_promtool_check_rules():
    r = run([promtool(), "check", "rules", str(RULES)])
    assert r.returncode == 0 and "SUCCESS" in r.stdout, \
        f"promtool check rules failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert f"{len(rule_names())} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_cover_every_alert():
    r = run([promtool(), "test", "rules", str(RULE_TESTS)], timeout=120)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, \
        f"promtool test rules failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    text = RULE_TESTS.read_text()
    tested = set(re.findall(r"^\s*alertname:\s*(\S+)\s*$", text, re.M))
    assert rule_names() <= tested, f"alerts without a unit test: {sorted(rule_names() - tested)}"
    # Each alert has a case where it fires and one where it does not.
    for name in rule_names():
        cases = re.findall(rf"alertname:\s*{name}\s*\n\s*exp_alerts:(.*?)(?=\n\s*- eval_time:|\n\s*- name:|\Z)",
                           text, re.S)
        assert any(c.strip().startswith("[]") for c in cases), f"{name}: no case where it must not fire"
        assert any("exp_labels" in c for c in cases), f"{name}: no case where it fires"


# --------------------------------------------------------------------------
# A real nusad and a real Prometheus


def failed_update_textfile(workdir: Path) -> Path:
    """Runs `nusactl update download` on an appliance made of files whose
    repository has no metadata: the check fails and the updater writes
    nusa_update_state{state="Failed"} to its metrics file, as on a box."""
    ctl = str(nt.nusactl_binary())
    workdir.mkdir(parents=True)
    for args in (["release", "keygen", "--keys", str(workdir / "keys")],
                 ["release", "init", "--repo", str(workdir / "repo"), "--keys", str(workdir / "keys")]):
        r = run([ctl, *args])
        assert r.returncode == 0, f"nusactl {args}: {r.stdout}{r.stderr}"
    for slot in ("slot-a", "slot-b"):
        with open(workdir / slot, "wb") as f:
            f.truncate(1 << 20)
    (workdir / "version").write_text("1.0.0\n")
    (workdir / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (workdir / "boot").mkdir()
    (workdir / "empty-repo").mkdir()
    metrics = workdir / "metrics.prom"
    config = workdir / "update.toml"
    config.write_text(nt.toml_dumps({
        "variant": "x86_64-rtx",
        "repository": str(workdir / "empty-repo"),
        "version_file": str(workdir / "version"),
        "trusted_root": str(workdir / "repo" / "metadata" / "1.root.json"),
        "state_dir": str(workdir / "state"),
        "machine_id": str(workdir / "machine-id"),
        "slots": [str(workdir / "slot-a"), str(workdir / "slot-b")],
        "reboot_command": [],
        "metrics_file": str(metrics),
        "bootloader": {"kind": "file", "dir": str(workdir / "boot")},
    }))
    r = run([ctl, "update", "--config", str(config), "download"])
    assert r.returncode != 0 and "failed at Check" in r.stdout + r.stderr, \
        f"the update was meant to fail at Check: {r.returncode}\n{r.stdout}{r.stderr}"
    assert 'nusa_update_state{state="Failed"} 1' in metrics.read_text(), metrics.read_text()
    return metrics


class Prometheus:
    """A prometheus process of our own: its own port, TSDB folder and log."""

    def __init__(self, workdir: Path, target: str, rules: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.port = nt.free_port()
        self.log_path = workdir / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        # JSON is YAML.
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        args = [prometheus_binary(),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                         cwd=self.workdir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, \
                f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after 30 s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def log_tail(self, max_bytes: int = 8000) -> str:
        try:
            return self.log_path.read_bytes()[-max_bytes:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"


def wait_until(what: str, check, timeout: float = 30, every: float = 0.5):
    """Calls check() until it returns without AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} after {timeout:.0f} s: {e}") from None
        time.sleep(every)


def send_traffic(main: nt.NusadServer) -> None:
    """Good and bad requests: local, cached (a miss, then a hit), sent to the
    region, and a 400."""
    x, expected = nt.golden_rows([0, 1])
    body, headers = nt.binary_infer_request(x, binary_output=False)
    for want in ("local", "cache"):
        r = nt.https1(main, "POST", nt.infer_path(), body, headers)
        nt.assert_infer_ok(r, expected, binary=False)
        assert nt.served_by(r) == want, f"expected nusa-served-by {want}: {r}"
    r = nt.https1(main, "POST", nt.infer_path(), nt.json_infer_body(x), nt.JSON_HEADERS)
    nt.assert_infer_ok(r, expected)
    for _ in range(2):
        r = nt.https1(main, "POST", nt.infer_path(PLACED), body, headers)
        nt.assert_infer_ok(r, expected, binary=False)
        assert nt.served_by(r) == f"cloud:{REGION}", f"{PLACED} should be answered by the region: {r}"
    bad = nt.json_infer_body(x, shape=[2, 3, 32, 31])
    nt.assert_error(nt.https1(main, "POST", nt.infer_path(), bad, nt.JSON_HEADERS), 400)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[tuple[nt.NusadServer, Prometheus]]:
    tmp = tmp_path_factory.mktemp("ops")
    textfile = failed_update_textfile(tmp / "appliance")
    region = nt.start_server("ops-region", tmp / "region", {PLACED: ((1,), None)})
    main = None
    prom = None
    try:
        cache = {"enabled": True, "ttl_s": 3600}
        models = {
            nt.MODEL: ((1,), nt.batching(max_batch_size=8, max_queue_delay_us=0)
                       | {"cache": cache, "slo_ms": 2000}),
            PLACED: ((1,), {"placement": "region"}),
            BROKEN: ((1,), None),
        }
        config = {
            "limits": {"max_body_bytes": 64 << 20},
            "server": {"metrics_textfiles": [str(textfile)]},
            "cache": {"memory_bytes": 16 << 20, "disk_bytes": 16 << 20},
            "spill": {"enabled": True, "max_tries": 2, "local_only_clients": [],
                      "probe_interval_ms": 1000},
            "regions": [{"name": REGION, "url": f"https://{region.authority}",
                         "ca": str(region.ca_path), "timeout_ms": 5000,
                         "requests_per_hour": 0, "bytes_per_hour": 0}],
        }
        # BROKEN never loads: the server is live, not ready.
        main = nt.start_server("ops-main", tmp / "main", models, config,
                               model_files={BROKEN: b"this is not an ONNX model"},
                               ready_path="/v2/health/live")
        send_traffic(main)
        prom = Prometheus(tmp / "prometheus", f"127.0.0.1:{main.metrics_port}", RULES).start()
        yield main, prom
    finally:
        try:
            if prom is not None:
                prom.stop()
        finally:
            if main is not None:
                main.stop_checked("ops-main")
            region.stop_checked("ops-region")


def test_promtool_check_metrics_passes_on_a_live_nusad(stack):
    main, _ = stack
    r = run([str(OPS_CHECK), f"http://127.0.0.1:{main.metrics_port}/metrics"], timeout=120)
    assert r.returncode == 0 and "ops-check: OK" in r.stdout, \
        f"scripts/ops-check failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"


def test_prometheus_has_every_series_the_rules_and_dashboard_use(stack):
    _, prom = stack
    wanted = used_metrics() - set(NOT_MADE_HERE)
    assert wanted, "no nusa_* metrics found in the rules and the dashboard"

    def check() -> set[str]:
        up = prom.api("query", query=f'up{{job="{JOB}"}}')["result"]
        assert up and up[0]["value"][1] == "1", f"the nusad target is not up: {up}"
        present = {r["metric"]["__name__"] for r in
                   prom.api("query", query='count by (__name__) ({__name__=~"nusa_.+"})')["result"]}
        missing = sorted(wanted - present)
        assert not missing, (f"not in Prometheus: {missing}; present: {sorted(present)}; "
                             f"in the source: { {m: in_source(m) for m in missing} }")
        return present

    present = wait_until("series missing", check, timeout=30)
    # An exemption that no longer applies hides nothing: take it out.
    made = sorted(set(NOT_MADE_HERE) & present)
    assert not made, f"{made} exist now: remove them from NOT_MADE_HERE so that they are checked"


def test_prometheus_loaded_the_rules_healthy_and_the_expected_alerts_go_pending(stack):
    main, prom = stack

    def rules_loaded() -> list[dict]:
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert {r["name"] for r in rules} == rule_names(), [r["name"] for r in rules]
        bad = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
        assert not bad, f"rules not healthy: {bad}"
        return rules

    rules = wait_until("rules not loaded or not evaluated", rules_loaded, timeout=30)
    assert all(r["type"] == "alerting" and r["labels"].get("severity") for r in rules), rules

    instance = f"127.0.0.1:{main.metrics_port}"

    def alerts() -> None:
        active = prom.api("alerts")["alerts"]
        by_name: dict[str, list[dict]] = {}
        for a in active:
            by_name.setdefault(a["labels"]["alertname"], []).append(a)
        for name, labels in EXPECTED_ALERTS.items():
            got = by_name.get(name, [])
            assert got, f"{name} is not pending: active {sorted(by_name)}"
            for a in got:
                assert a["state"] in ("pending", "firing"), a
                assert a["labels"].get("instance") == instance, a
                for k, v in labels.items():
                    assert a["labels"].get(k) == v, f"{name}: {k}={a['labels'].get(k)!r}, expected {v!r}"
        unexpected = sorted(set(by_name) - set(EXPECTED_ALERTS) - MAY_FIRE)
        assert not unexpected, f"alerts the set-up does not cause: " \
                               f"{ {n: [a['labels'] for a in by_name[n]] for n in unexpected} }"

    wait_until("alerts", alerts, timeout=30)


def test_every_dashboard_query_evaluates(stack):
    _, prom = stack
    subst = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}
    for q in dashboard_queries():
        expr = q
        for k, v in subst.items():
            expr = expr.replace(k, v)
        m = re.fullmatch(r"label_values\((.*), *(\w+)\)", expr)
        if m:  # a Grafana template query: the series' labels
            data = prom.api("series", **{"match[]": m.group(1)})
            assert any(m.group(2) in s for s in data), f"{q}: no series with label {m.group(2)}"
            continue
        assert "$" not in expr, f"a variable the test does not know in {q!r}"
        prom.api("query", query=expr)

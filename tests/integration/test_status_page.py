"""The status page and `nusactl status` (issue 16): the page on the metrics
listener, rendered by headless Chromium (Debian's package) with its own
script, shows each section with the values this test caused (cache hits,
a bad request, a region whose certificate chain is refused, the warning
that says so); it refreshes itself; `nusactl status` shows the same over
the admin socket, as text and `--json`, and says clearly when nusad is not
there."""
from __future__ import annotations

import html.parser
import http.client
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt
import spilltest as st

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium")


def metrics_get(server: nt.NusadServer, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Dom(html.parser.HTMLParser):
    """Text by element id, table rows by data-model / data-region, and the
    body's data attributes, from Chromium's --dump-dom."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: dict[str, list[str]] = {}
        self.body: dict[str, str] = {}
        self.texts: list[str] = []
        self._open: list[tuple[str, str | None, str | None]] = []  # tag, id, row key
        self._cells: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = {k: v for k, v in a.items() if k.startswith("data-")}
        key = a.get("data-model") or a.get("data-region")
        if tag == "tr" and key:
            key = ("region:" if "data-region" in a else "model:") + key
            self._cells[key] = []
        self._open.append((tag, a.get("id"), key if tag == "tr" else None))
        if tag == "td":
            row = next((k for _, _, k in reversed(self._open) if k), None)
            if row is not None:
                self._cells[row].append("")

    def handle_endtag(self, tag):
        while self._open:
            t, ident, key = self._open.pop()
            if key:
                self.rows[key] = self._cells[key]
            if t == tag:
                break

    def handle_data(self, data):
        self.texts.append(data)
        for _, ident, _ in self._open:
            if ident:
                self.by_id[ident] = self.by_id.get(ident, "") + data
        row = next((k for _, _, k in reversed(self._open) if k), None)
        if row is not None and self._open and self._open[-1][0] in ("td",) and self._cells[row]:
            self._cells[row][-1] += data


def chromium(url: str, out_dir: Path) -> Dom:
    """The page's DOM after its script ran for 7 s of virtual time, and a
    screenshot in the test artifacts."""
    profile = tempfile.mkdtemp(prefix="nusa-chromium-")
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
            "--virtual-time-budget=7000"]
    try:
        dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True,
                             timeout=90)
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = out_dir / "status-page.png"
        s = subprocess.run(base + ["--window-size=1280,1600", f"--screenshot={shot}", url],
                           capture_output=True, text=True, timeout=90)
        assert s.returncode == 0 and shot.stat().st_size > 10_000, s.stderr[-2000:]
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    parsed = Dom()
    parsed.feed(dom.stdout)
    return parsed


def artifacts_dir() -> Path:
    d = Path(os.environ.get("NUSA_TEST_ARTIFACTS", nt.cargo_target_dir() / "test-artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("status")
    for d in ("region", "main"):
        (tmp / d).mkdir()
    region = nt.NusadServer("region", tmp / "region", None).start()
    other_ca = tmp / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp / "other.key"),
                    "-out", str(other_ca), "-days", "2", "-subj", "/CN=Not The Region CA"],
                   check=True, capture_output=True)
    main = nt.NusadServer("main", tmp / "main", None, {
        "regions": [st.region_entry("good", region),
                    st.region_entry("refused", region, ca=str(other_ca))],
        "spill": {"enabled": True, "probe_interval_ms": 200}}).start()
    try:
        # One miss and two hits of the same request, and one bad request.
        x = np.random.default_rng(3).random((1, *nt.INPUT_ROW_SHAPE), dtype=np.float32)
        body = nt.json_infer_body(x)
        for _ in range(3):
            r = nt.https1(main, "POST", nt.infer_path(), body, nt.JSON_HEADERS)
            assert r.status == 200, r
        bad = nt.https1(main, "POST", nt.infer_path(), b"{not json", nt.JSON_HEADERS)
        assert bad.status == 400, bad

        def probed(samples):
            n = nt.metric_sum(samples, "nusa_region_probe_failures_total", region="refused")
            assert n >= 2, f"{n} failed probes of the refused region"
            assert nt.metric_sum(samples, "nusa_region_probe_up", region="good") == 1
            assert nt.metric_sum(samples, "nusa_cache_hits_total") == 2
        nt.wait_for_metrics(main, probed, timeout=30)
        yield main
    finally:
        main.stop_checked("main")
        region.stop_checked("region")


def test_status_json_matches_the_admin_overview_and_says_what_the_test_did(box):
    code, headers, raw = metrics_get(box, "/status.json")
    assert code == 200 and headers["content-type"] == "application/json", (code, headers)
    o = json.loads(raw)
    assert o["ready"] is True and o["version"], o
    [model] = [m for m in o["models"]["models"] if m["name"] == nt.MODEL]
    assert model["state"] == "READY", model
    assert (o["cache"]["hits"], o["cache"]["misses"]) == (2, 1), o["cache"]
    assert o["cache"]["hit_ratio"] == pytest.approx(2 / 3)
    outcomes = dict(map(tuple, o["requests"]["by_outcome"]))
    assert outcomes.get("ok") == 3 and outcomes.get("bad_request") == 1, outcomes
    regions = {r["name"]: r for r in o["regions"]}
    assert regions["good"]["probe"] == "ok" and regions["good"]["rtt_ms"] > 0, regions
    assert regions["refused"]["probe"] == "tls", regions
    assert any("region probe failed" in e["text"] and e["level"] == "WARN" for e in o["errors"]), \
        o["errors"]
    # The same overview on the admin listener.
    admin = nt.admin(box, "GET", "/v2/nusa/status")
    assert admin.status == 200, admin
    a = admin.json()
    assert a["cache"] == o["cache"] and a["regions"] == o["regions"], (a, o)
    # Only the admin surfaces and the metrics listener serve it.
    public = nt.https1(box, "GET", "/v2/nusa/status")
    assert public.status == 404, public


def test_the_page_is_static_safe_and_offline(box):
    code, headers, page = metrics_get(box, "/status")
    assert code == 200 and headers["content-type"].startswith("text/html"), headers
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp, csp
    text = page.decode()
    # No external assets: the box may be offline.
    assert "http://" not in text and "https://" not in text and "src=" not in text, \
        [l for l in text.splitlines() if "http" in l or "src=" in l]
    assert ".innerHTML" not in text, "values must be set as text"
    code, _, body = metrics_get(box, "/nope")
    assert code == 404 and b"/status" in body


def test_the_page_in_headless_chromium_shows_every_section(box):
    if CHROMIUM is None:
        why = "chromium is not installed (scripts/setup installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}: the test command installs it, so CI must run this")
        pytest.skip(why)
    dom = chromium(f"http://127.0.0.1:{box.metrics_port}/status", artifacts_dir())
    # The script drew the data, and again on its own (every 2 s).
    assert int(dom.body.get("data-renders", "0")) >= 3, dom.body
    assert dom.by_id["ready"] == "ready", dom.by_id
    assert dom.by_id["version"] not in ("", "?")
    model = dom.rows[f"model:{nt.MODEL}"]
    assert model[1] == "READY", model
    assert dom.by_id["cache-ratio"] == "66.7%", dom.by_id
    assert dom.by_id["cache-counts"] == "2 / 1 / 0", dom.by_id
    good, refused = dom.rows["region:good"], dom.rows["region:refused"]
    assert good[1] == "ok" and good[3].endswith(" ms"), good
    assert refused[1] == "tls", refused
    assert "bad_request 1" in dom.by_id["outcomes"] and "ok 3" in dom.by_id["outcomes"], dom.by_id
    assert "spilled" in dom.by_id["spill-share"], dom.by_id
    assert "no updater report" in dom.by_id["update-state"], dom.by_id
    assert "region probe failed" in dom.by_id["errors"], dom.by_id["errors"]
    # Every refresh was answered.
    assert dom.by_id.get("stale-reason", "") == "", dom.by_id["stale-reason"]
    assert "none" in dom.by_id["rollouts"], dom.by_id["rollouts"]
    # The drift monitor started at the first sampled request (1 in 16, the
    # first one included) and is learning its baseline.
    drift = dom.rows[f"model:{nt.MODEL}/1"]
    assert drift[2] == "warmup" and drift[5] == "learning the baseline", drift


def nusactl(server: nt.NusadServer | None, *args: str, socket: Path | None = None):
    sock = socket or server.admin_socket
    return subprocess.run([str(nt.nusactl_binary()), "status", "--socket", str(sock), *args],
                          capture_output=True, text=True, timeout=30)


def test_nusactl_status_shows_the_same_in_a_terminal(box):
    r = nusactl(box)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.splitlines()[0].startswith("nusad ") and "ready" in out.splitlines()[0], out
    assert nt.MODEL in out and "READY" in out, out
    assert "hit ratio 66.7%" in out and "2 hits, 1 misses" in out, out
    assert "probe tls" in out and "probe ok" in out, out
    assert "region probe failed" in out, out
    j = nusactl(box, "--json")
    assert j.returncode == 0, j.stderr
    o = json.loads(j.stdout)
    assert o["cache"]["hits"] == 2 and {r["name"] for r in o["regions"]} == {"good", "refused"}


def test_nusactl_status_says_clearly_when_nusad_is_not_there(tmp_path):
    r = nusactl(None, socket=tmp_path / "admin.sock")
    assert r.returncode == 1, r
    assert "connecting to nusad's admin socket" in r.stderr and "is nusad running" in r.stderr, \
        r.stderr
    assert r.stdout == ""

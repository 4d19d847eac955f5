"""Signed models (issue 13): a model published with `nusactl models
publish` on one machine reaches a running nusad through the model
repository (served over HTTPS with Range by a static server), is verified,
installed and served; a newer version is pulled and hot-swapped in; files
changed on disk after the pull, and versions nobody signed, are refused at
load while the verified version keeps serving; outside the pull window
nothing is pulled until an operator asks (`nusactl models pull`).
"""
from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt
from test_model_lifecycle import MODEL, WEIGHTS, check_answer, infer_body, matmul_model, nusactl

sys.path.insert(0, str(nt.REPO_ROOT / "tests" / "image"))
from repo_server import RepoServer  # noqa: E402

pytestmark = pytest.mark.timeout(300)


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def tls_for_127(work: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl): (ca, cert, key)."""
    ca_key, ca, key, csr, cert = (work / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=test model CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = work / "srv.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


class Publisher:
    """The release engineer's side: a model repository and its keys."""

    def __init__(self, work: Path):
        self.repo, self.keys, self.work = work / "model-repo", work / "model-keys", work
        run(str(nt.nusactl_binary()), "models", "init", "--repo", str(self.repo), "--keys", str(self.keys))

    @property
    def root(self) -> Path:
        return self.repo / "metadata" / "root.json"

    def publish(self, version: int, weights: np.ndarray, *extra: str) -> dict:
        vdir = self.work / f"src-{version}"
        vdir.mkdir()
        (vdir / "model.onnx").write_bytes(matmul_model(weights))
        config = nt.batching(max_batch_size=8, max_queue_delay_us=1000)
        config["versions"] = "all"
        (vdir / "config.toml").write_text(nt.toml_dumps(config))
        out = run(str(nt.nusactl_binary()), "models", "publish", "--json", "--repo", str(self.repo),
                  "--keys", str(self.keys), "--model", MODEL, "--version", str(version),
                  "--dir", str(vdir), "--source-revision", f"rev-{version}",
                  "--training-run", f"run-{version}", "--publisher", "test@nusa", *extra)
        return json.loads(out)


def signed_server(work: Path, pub: Publisher, url: str, ca: Path | None = None,
                  **models) -> nt.NusadServer:
    config = {"models": {"repository": url, "trusted_root": str(pub.root),
                         "poll_interval_s": 1, "keep_versions": 2, "reserve_bytes": 0, **models}}
    if ca is not None:
        config["models"]["ca"] = str(ca)
    work.mkdir(parents=True, exist_ok=True)
    return nt.NusadServer("signed", work, None, config).start()


def status(s: nt.NusadServer) -> dict:
    return json.loads(nusactl(s, "status", "--json").stdout)


def wait_serving(s: nt.NusadServer, version: int, timeout: float = 60,
                 state: str = "READY") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(s)
        m = next((m for m in st["models"] if m["name"] == MODEL), None)
        if m and m["serving"] == version and m["state"] == state:
            return st
        assert time.monotonic() < deadline, f"not serving version {version}: {st}\n{s.log_tail()}"
        time.sleep(0.3)


def answer(s: nt.NusadServer, x: np.ndarray) -> int:
    return check_answer(nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)), x, "signed")


def test_published_models_are_pulled_verified_hot_swapped_and_tampering_refused(tmp_path):
    pub = Publisher(tmp_path)
    pub.publish(1, WEIGHTS[1])
    ca, cert, key = tls_for_127(tmp_path)
    x = np.ones((2, 4), dtype=np.float32)
    with RepoServer(pub.repo, tls=(cert, key)) as repo:
        s = signed_server(tmp_path / "box", pub, f"https://127.0.0.1:{repo.port}", ca)
        try:
            st = wait_serving(s, 1)
            assert st["mode"] == "signed"
            assert answer(s, x) == 1
            # The signed provenance travels to the box's status and list.
            prov = st["models"][0]["versions"][0]["provenance"]
            assert (prov["source_revision"], prov["training_run"], prov["publisher"]) == \
                ("rev-1", "run-1", "test@nusa"), prov
            assert prov["published_at"].endswith("Z"), prov
            listed = nusactl(s, "list").stdout
            assert "test@nusa rev rev-1 run-1" in listed, listed
            # Files came with Range requests from the static server.
            assert any("/targets/" in r and "bytes=" in r for r in repo.requests), repo.requests[-5:]

            # A newer version published on the release machine is pulled
            # and swapped in while nusad serves.
            pub.publish(2, WEIGHTS[2])
            wait_serving(s, 2)
            assert answer(s, x) == 2
            events = [(e["event"], e.get("version")) for e in
                      json.loads(nusactl(s, "history", MODEL, "--json").stdout)["events"]]
            assert ("pull", 1) in events and ("pull", 2) in events and ("swap", 2) in events, events
            assert events.count(("published", 1)) == 1 and ("published", 2) in events, events

            # Weights changed on the data partition after the pull: refused
            # at the next load, and version 1 keeps serving.
            installed = s.data_dir / "models" / MODEL / "2" / "model.onnx"
            # Other weights in a still-valid model: one weight of W changed.
            data = bytearray(installed.read_bytes())
            at = bytes(data).find(WEIGHTS[2].tobytes())
            assert at >= 0
            data[at + 3] ^= 0x01
            installed.write_bytes(bytes(data))
            assert s.stop() == 0
            s.ready_path = "/v2/health/live"  # strict readiness: a refused version holds it
            s.start()
            # Version 1 serves; the model reports the refusal (not READY).
            st = wait_serving(s, 1, state="UNAVAILABLE")
            m = st["models"][0]
            assert "version 2 refused" in m["error"] and "sha256" in m["error"], m
            assert answer(s, x) == 1
            assert nt.https1(s, "POST", nt.infer_path(MODEL, 2), *infer_body(x)).status == 404

            # A version folder nobody signed (copied from version 1) is refused too.
            fake = s.data_dir / "models" / MODEL / "7"
            fake.mkdir()
            for f in (s.data_dir / "models" / MODEL / "1").iterdir():
                (fake / f.name).write_bytes(f.read_bytes())
            r = nt.admin(s, "POST", f"/v2/repository/models/{MODEL}/load")
            nt.assert_error(r, 400, ["version", "refused"])
            assert answer(s, x) == 1
        finally:
            s.stop_checked()


def test_outside_the_window_nothing_is_pulled_until_an_operator_asks(tmp_path):
    pub = Publisher(tmp_path)
    pub.publish(1, WEIGHTS[1])
    pub.publish(2, WEIGHTS[2])
    now = datetime.datetime.now()
    start = (now + datetime.timedelta(hours=2)).strftime("%H:00")
    end = (now + datetime.timedelta(hours=3)).strftime("%H:00")
    x = np.ones((1, 4), dtype=np.float32)
    # The repository as a folder (a USB stick, a mounted share).
    s = signed_server(tmp_path / "box", pub, str(pub.repo), pull_window=f"{start}-{end}")
    try:
        def waiting() -> float:
            return nt.metric_sum(nt.scrape_metrics(s), "nusa_model_pulls_waiting")
        deadline = time.monotonic() + 30
        while waiting() < 1:
            assert time.monotonic() < deadline, s.log_tail()
            time.sleep(0.3)
        time.sleep(2.5)  # a few more polls: still nothing pulled
        assert not (s.data_dir / "models" / MODEL).exists()
        assert nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x)).status == 404

        reply = json.loads(nusactl(s, "pull", MODEL, "--version", "1", "--json").stdout)
        assert reply["version"] == 1 and "installed" in reply["detail"], reply
        wait_serving(s, 1)
        assert answer(s, x) == 1
        # Version 2 still waits for the window.
        assert not (s.data_dir / "models" / MODEL / "2").exists()
        r = nusactl(s, "pull", MODEL, "--version", "9", check=False)
        assert r.returncode != 0 and "not published" in r.stderr, r.stderr
    finally:
        s.stop_checked()


def publish_big(tmp_path: Path, pub: "Publisher", version: int = 1) -> int:
    """A 512 KiB model (a 362x362 MatMul), published; its size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(5).standard_normal((362, 362)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], MODEL,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 362])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 362])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    vdir = tmp_path / f"big-{version}"
    vdir.mkdir()
    (vdir / "model.onnx").write_bytes(model.SerializeToString())
    run(str(nt.nusactl_binary()), "models", "publish", "--repo", str(pub.repo), "--keys", str(pub.keys),
        "--model", MODEL, "--version", str(version), "--dir", str(vdir), "--source-revision", "r",
        "--training-run", "t", "--publisher", "p")
    return (vdir / "model.onnx").stat().st_size


def test_a_long_pull_shows_progress_and_eta_under_the_bandwidth_cap(tmp_path):
    """A 512 KiB model at 64 KiB/s over HTTPS: while it comes, the metrics
    show the bytes in place and an ETA and the log a progress line; it
    cannot arrive faster than the cap (a lower bound only)."""
    pub = Publisher(tmp_path)
    size = publish_big(tmp_path, pub)
    ca, cert, key = tls_for_127(tmp_path)
    cap = 64 << 10
    with RepoServer(pub.repo, tls=(cert, key)) as repo:
        s = signed_server(tmp_path / "box", pub, f"https://127.0.0.1:{repo.port}", ca,
                          max_bytes_per_second=cap)
        try:
            started = time.monotonic()
            seen = []
            while True:
                samples = nt.scrape_metrics(s)
                total = nt.metric_sum(samples, "nusa_model_pull_size_bytes")
                if total > 0:
                    seen.append((nt.metric_sum(samples, "nusa_model_pull_progress_bytes"), total,
                                 nt.metric_sum(samples, "nusa_model_pull_eta_seconds")))
                if (s.data_dir / "models" / MODEL / "1").exists():
                    break
                assert time.monotonic() - started < 60, s.log_tail()
                time.sleep(0.5)
            took = time.monotonic() - started
            assert any(0 < d < t and eta > 0 for d, t, eta in seen), seen
            assert any(t >= size for _, t, _ in seen), (seen, size)
            assert "% (" in s.log_tail() and "ETA" in s.log_tail()
            # 16 KiB of burst, then 64 KiB/s.
            assert took >= (size - (16 << 10)) / cap - 1, f"{size} bytes at {cap} B/s in {took:.1f} s"
            wait_serving(s, 1)
        finally:
            s.stop_checked()


def test_an_operators_pull_shows_its_progress_in_nusactl(tmp_path):
    """`nusactl models pull` of a 512 KiB version at 64 KiB/s, outside the
    pull window: while it runs, `nusactl models status` shows the pull with
    its ETA, and the pull command itself prints its progress a tenth at a
    time (not a terminal), then the result."""
    import threading

    pub = Publisher(tmp_path)
    size = publish_big(tmp_path, pub)
    now = datetime.datetime.now()
    start = (now + datetime.timedelta(hours=2)).strftime("%H:00")
    end = (now + datetime.timedelta(hours=3)).strftime("%H:00")
    ca, cert, key = tls_for_127(tmp_path)
    repo = RepoServer(pub.repo, tls=(cert, key)).__enter__()
    s = signed_server(tmp_path / "box", pub, f"https://127.0.0.1:{repo.port}", ca,
                      pull_window=f"{start}-{end}", max_bytes_per_second=64 << 10)
    try:
        result: dict = {}
        pulling = threading.Thread(
            target=lambda: result.update(r=nusactl(s, "pull", MODEL, "--version", "1")))
        pulling.start()
        seen = []
        while pulling.is_alive():
            st = status(s)
            if st.get("pulling"):
                seen.append(st["pulling"])
                text = nusactl(s, "status").stdout
                assert f"pulling {MODEL} version 1:" in text, text
            time.sleep(0.5)
        pulling.join()
        r = result["r"]
        assert "installed" in r.stdout, r.stdout
        assert seen, "the status never showed the pull"
        assert all(p["model"] == MODEL and p["version"] == 1 and p["total_bytes"] >= size
                   for p in seen), seen
        assert any(0 < p["done_bytes"] < p["total_bytes"] and p["eta_s"] for p in seen), seen
        lines = [l for l in r.stderr.splitlines() if l.startswith("pull: ")]
        assert len(lines) >= 3 and any("MiB/s" in l for l in lines), r.stderr
        percents = [int(l.split()[1].rstrip("%")) for l in lines]
        assert percents == sorted(percents) and len(set(percents)) == len(percents), percents
        assert "pulling" not in status(s), "the pull is over, yet the status shows it"
        wait_serving(s, 1)
    finally:
        s.stop_checked()
        repo.__exit__(None, None, None)

"""Encrypted models (issue 13): a version published with `nusactl models
publish --encrypt-for FLEET_PUBLIC_KEY` is pulled and verified like any
signed version (the hashes are the ciphertext's), decrypted into memory at
load with the box's key (`models.decryption_key`) and served; its plaintext
weights appear nowhere on the box's disk. A box without the key, or with
another key, refuses it with the reason; after `nusactl models rewrap` a box
with only the new key serves it; a key file others can read stops nusad at
start.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import nusatest as nt
from test_model_lifecycle import MODEL, infer_body, matmul_model, nusactl
from test_signed_models import Publisher, run, signed_server, status

pytestmark = pytest.mark.timeout(300)

# Weights no other file would hold by chance: their raw bytes are what the
# disk is searched for.
W = np.random.default_rng(1313).standard_normal((4, 4)).astype(np.float32)


def keygen(work: Path, name: str) -> tuple[Path, Path, str]:
    """A fleet key pair: (private, public, key id)."""
    out = json.loads(run(str(nt.nusactl_binary()), "models", "keygen", "--json",
                         "--out", str(work / name)))
    return Path(out["private_key"]), Path(out["public_key"]), out["key_id"]


def model_status(s: nt.NusadServer) -> dict | None:
    return next((m for m in status(s)["models"] if m["name"] == MODEL), None)


def wait_model(s: nt.NusadServer, ok, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = model_status(s)
        if m is not None and ok(m):
            return m
        assert time.monotonic() < deadline, f"{what}: {m}\n{s.log_tail()}"
        time.sleep(0.3)


def served_answer(s: nt.NusadServer, x: np.ndarray) -> np.ndarray:
    resp = nt.https1(s, "POST", nt.infer_path(MODEL), *infer_body(x))
    assert resp.status == 200, resp
    header, arrays = nt.decode_infer_response(resp)
    assert int(header["model_version"]) == 1
    return arrays["y"]


def files_holding(roots: list[Path], needles: list[bytes], since: float | None = None,
                  skip: Path | None = None) -> list[str]:
    """Every regular file under `roots` (changed after `since`, outside
    `skip`) that contains one of `needles`."""
    hits = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            if skip is not None and Path(dirpath).is_relative_to(skip):
                continue
            for name in names:
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                    if not p.is_file() or p.is_symlink() or st.st_size > 256 << 20:
                        continue
                    if since is not None and st.st_mtime < since:
                        continue
                    data = p.read_bytes()
                except OSError:
                    continue
                hits += [f"{p} holds needle {i}" for i, n in enumerate(needles) if n in data]
    return hits


def test_encrypted_versions_are_decrypted_in_memory_refused_without_the_key_and_rewrapped(tmp_path):
    started = time.time()
    pub = Publisher(tmp_path)
    a_priv, a_pub, a_id = keygen(tmp_path, "fleet-a")
    b_priv, b_pub, b_id = keygen(tmp_path, "fleet-b")
    assert a_priv.stat().st_mode & 0o777 == 0o600 and a_id != b_id

    report = pub.publish(1, W, "--encrypt-for", str(a_pub))
    assert report["format"] == 2, report
    paths = {f["path"] for f in report["files"]}
    assert "model.onnx.enc" in paths and "model.onnx" not in paths, paths
    assert [f["plaintext"] for f in report["encryption"]["files"]] == ["model.onnx"]
    plaintext = matmul_model(W)
    needles = [plaintext, W.tobytes()]
    assert W.tobytes() in plaintext
    # What the repository (and so any mirror or CDN) holds is ciphertext.
    assert files_holding([pub.repo], needles) == []
    published = [str(p) for p in (pub.repo / "targets").rglob("*") if p.is_file()]
    assert any(p.endswith(f"keys/{a_id}/key.json") for p in published), published

    x = np.array([[1, 2, 3, 4], [0.5, -1, 0, 2]], dtype=np.float32)
    want = x @ W

    # A box with key A: pulls, verifies, decrypts into memory, serves.
    box_a = signed_server(tmp_path / "box-a", pub, str(pub.repo), decryption_key=str(a_priv))
    try:
        m = wait_model(box_a, lambda m: m["serving"] == 1 and m["state"] == "READY", "box A serving")
        v = m["versions"][0]
        assert v["engine"] == "onnxruntime" and "encrypted" in v["engine_detail"], v
        np.testing.assert_allclose(served_answer(box_a, x), want, rtol=1e-5, atol=1e-5)
        installed = box_a.data_dir / "models" / MODEL / "1"
        assert (installed / "model.onnx.enc").is_file() and not (installed / "model.onnx").exists()
        assert (installed / "keys" / a_id / "key.json").is_file()
        # Reload (a hot swap path) still decrypts.
        r = nt.admin(box_a, "POST", f"/v2/repository/models/{MODEL}/load")
        assert r.status == 200, r
        np.testing.assert_allclose(served_answer(box_a, x), want, rtol=1e-5, atol=1e-5)
        # No plaintext weights anywhere on the box's data partition, nor in
        # files created in the temporary folder since the test started
        # (other than the publisher's own source folders).
        hits = files_holding([box_a.data_dir], needles)
        hits += files_holding([Path(tempfile.gettempdir())], needles, since=started,
                              skip=tmp_path)
        hits = [h for h in hits if "/src-" not in h]
        assert hits == [], hits
        # The key never reaches the log.
        key_text = a_priv.read_text().strip().split(":")[-1]
        assert key_text not in box_a.log_path.read_text()
    finally:
        box_a.stop_checked()

    # A box without a key, and one with key B only: refused, with the reason.
    box_none = refusing_box(tmp_path / "box-none", pub)
    try:
        m = wait_model(box_none, lambda m: m["error"], "box without a key refuses")
        assert m["serving"] is None and "encrypted" in m["error"] and \
            "models.decryption_key" in m["error"] and "version 1" in m["error"], m
        r = nt.https1(box_none, "POST", nt.infer_path(MODEL), *infer_body(x))
        assert r.status != 200, r
        events = json.loads(nusactl(box_none, "history", MODEL, "--json").stdout)["events"]
        assert any(e["event"] == "refused" and "encrypted" in e["detail"] for e in events), events
    finally:
        box_none.stop_checked()

    box_b = refusing_box(tmp_path / "box-b", pub, decryption_key=str(b_priv))
    try:
        m = wait_model(box_b, lambda m: m["error"], "box with key B refuses")
        assert m["serving"] is None and b_id in m["error"] and a_id in m["error"] and \
            "rewrap" in m["error"], m
        installed_b = box_b.data_dir / "models" / MODEL / "1"
        assert (installed_b / "model.onnx.enc").is_file()
        assert not (installed_b / "keys" / b_id).exists()

        # Rotation: wrap the data key for key B. One new signed target; the
        # version's files and manifest are untouched.
        manifest_before = sorted((pub.repo / "targets").rglob("*manifest.json"))
        out = run(str(nt.nusactl_binary()), "models", "rewrap", "--repo", str(pub.repo),
                  "--keys", str(pub.keys), "--model", MODEL, "--version", "1",
                  "--old-private", str(a_priv), "--new-public", str(b_pub))
        assert f"keys/{b_id}/key.json" in out, out
        assert sorted((pub.repo / "targets").rglob("*manifest.json")) == manifest_before
        # Twice is refused; so is a key that cannot unwrap it.
        again = run_fail("rewrap", "--repo", str(pub.repo), "--keys", str(pub.keys), "--model",
                         MODEL, "--version", "1", "--old-private", str(a_priv), "--new-public",
                         str(b_pub))
        assert "already" in again, again

        # The box that installed the version before the rewrap fetches the
        # new wrapping by itself at its next poll (not the version again)
        # and serves it, without a restart.
        wait_model(box_b, lambda m: m["serving"] == 1 and m["state"] == "READY",
                   "box B picks up the new wrapping")
        assert (installed_b / "keys" / b_id / "key.json").is_file()
        np.testing.assert_allclose(served_answer(box_b, x), want, rtol=1e-5, atol=1e-5)
        assert files_holding([box_b.data_dir], needles) == []
    finally:
        box_b.stop_checked()

    box_b2 = signed_server(tmp_path / "box-b2", pub, str(pub.repo), decryption_key=str(b_priv))
    try:
        wait_model(box_b2, lambda m: m["serving"] == 1 and m["state"] == "READY", "box B after rewrap")
        np.testing.assert_allclose(served_answer(box_b2, x), want, rtol=1e-5, atol=1e-5)
        assert files_holding([box_b2.data_dir], needles) == []
    finally:
        box_b2.stop_checked()


def refusing_box(work: Path, pub: Publisher, **models) -> nt.NusadServer:
    """signed_server for a box that will refuse the version: started once
    live (strict readiness fails while a model is refused)."""
    config = {"models": {"repository": str(pub.repo), "trusted_root": str(pub.root),
                         "poll_interval_s": 1, "keep_versions": 2, "reserve_bytes": 0, **models}}
    work.mkdir(parents=True, exist_ok=True)
    s = nt.NusadServer("signed", work, None, config)
    s.ready_path = "/v2/health/live"
    return s.start()


def run_fail(*args: str) -> str:
    r = subprocess.run([str(nt.nusactl_binary()), "models", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0, r.stdout
    return r.stderr


def test_a_key_file_others_can_read_stops_nusad(tmp_path):
    pub = Publisher(tmp_path)
    priv, _, _ = keygen(tmp_path, "fleet")
    priv.chmod(0o640)
    config = tmp_path / "nusad.toml"
    config.write_text(nt.toml_dumps({"models": {
        "repository": str(pub.repo), "trusted_root": str(pub.root),
        "decryption_key": str(priv)}}))
    p = nt.run_nusad(["--listen", f"127.0.0.1:{nt.free_port()}", "--data", str(tmp_path / "data"),
                      "--metrics-listen", f"127.0.0.1:{nt.free_port()}",
                      "--admin-listen", f"127.0.0.1:{nt.free_port()}", "--config", str(config)])
    assert p.returncode != 0, p.stderr
    assert "models.decryption_key" in p.stderr and "owner only" in p.stderr, p.stderr
    assert priv.read_text().strip().split(":")[-1] not in p.stderr + p.stdout

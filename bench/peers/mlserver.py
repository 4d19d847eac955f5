"""MLServer 1.7.1 as the peer for the inference path, with and without its
adaptive batching, serving an ONNX model through mlserver_runtime.py.

MLServer serves plain HTTP/1.1 (no TLS of its own; users put it behind a
proxy), so its figures carry no TLS cost while nusad's do: the report says so.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from benchlib import ROOT, pin

VENV = ROOT / ".cache/mlserver-venv"


class MLServer:
    def __init__(self, workdir: Path, model_name: str, model_file: Path, http_port: int, grpc_port: int,
                 metrics_port: int, batching: bool):
        self.workdir, self.http_port, self.model_name = workdir, http_port, model_name
        self.proc: subprocess.Popen | None = None
        mdir = workdir / "models" / model_name
        mdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(__file__).with_name("mlserver_runtime.py"), workdir / "mlserver_runtime.py")
        shutil.copy(model_file, mdir / "model.onnx")
        settings = {"name": model_name, "implementation": "mlserver_runtime.OnnxRuntimeModel",
                    "parameters": {"uri": str(mdir / "model.onnx")}}
        if batching:
            # Adaptive batching as MLServer's docs set it up.
            settings.update({"max_batch_size": 32, "max_batch_time": 0.0005})
        (mdir / "model-settings.json").write_text(json.dumps(settings))
        (workdir / "settings.json").write_text(json.dumps({
            "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
            "parallel_workers": 1, "debug": False, "load_models_at_startup": True}))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v2/models/{self.model_name}/infer"

    def start(self, timeout: float = 120) -> "MLServer":
        env = dict(os.environ, PYTHONPATH=str(self.workdir))
        self.log = open(self.workdir / "mlserver.log", "wb")
        self.proc = subprocess.Popen(pin(0) + [str(VENV / "bin/mlserver"), "start", str(self.workdir)],
                                     cwd=self.workdir, env=env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.time() + timeout
        ready = f"http://127.0.0.1:{self.http_port}/v2/models/{self.model_name}/ready"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlserver exited: {(self.workdir / 'mlserver.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(ready, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        raise RuntimeError("mlserver did not become ready")

    def pids(self) -> list[int]:
        import procstat
        assert self.proc is not None
        # mlserver (taskset execs it) and its inference worker processes.
        return procstat.tree(self.proc.pid)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)

"""A bad --config file: exit code 64 and one line on stderr naming the key."""
import subprocess

import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("toml_text, key", [
    ('[limits]\nmax_body_bytes = "big"\n', "limits.max_body_bytes"),
    ("[limits]\nmax_body_bytes = 1.5\n", "limits.max_body_bytes"),
    ("[limits]\nmax_body_bytez = 1024\n", "limits.max_body_bytez"),
    ("[limitz]\nmax_body_bytes = 1024\n", "limitz"),
], ids=["wrong-type-string", "wrong-type-float", "unknown-key", "unknown-table"])
def test_bad_config_exits_64(tmp_path, toml_text, key):
    models = nt.make_model_repo(tmp_path / "models", {nt.MODEL: ((1,), None)})
    config = tmp_path / "bad.toml"
    config.write_text(toml_text)
    args = ["--listen", f"127.0.0.1:{nt.free_port()}", "--models", str(models),
            "--data", str(tmp_path / "data"), "--metrics-listen", f"127.0.0.1:{nt.free_port()}",
            "--config", str(config)]
    try:
        p = nt.run_nusad(args, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nusad kept running with a bad config:\n{toml_text}")
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == nt.EXIT_USAGE, \
        f"exit code {p.returncode}, expected {nt.EXIT_USAGE}; stderr:\n{p.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{p.stderr}"
    assert key in lines[0], f"stderr should name {key!r}: {lines[0]!r}"

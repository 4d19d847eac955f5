"""The updater's steps as a trace (issue 16, "The updater too"): with
`[tracing]` in update.toml, `nusactl update` exports each update attempt as
one trace in a real OTLP receiver (otlp_receiver.py): the check, download,
write, verify, brake check, arm and boot-switch steps as spans under the
run's `update` span, and an attempt that runs over two processes
(`download`, then `apply`) is still one trace. A failed step is marked so,
with its reason. Without `[tracing]` nothing is sent and no context file is
left behind.

The appliance is made of files (test_release_brake.py's Fleet and Box)."""
from __future__ import annotations

import pytest

import nusatest as nt
import test_release_brake as rb
from otlp_receiver import OtlpReceiver, by_trace

pytestmark = pytest.mark.timeout(180)

SERVICE = "nusa-update-test"


@pytest.fixture()
def receiver():
    r = OtlpReceiver().start()
    yield r
    r.stop()


def traced_box(tmp_path, receiver: OtlpReceiver) -> rb.Box:
    fleet = rb.Fleet(tmp_path / "fleet")
    box = rb.Box(tmp_path / "box", fleet)
    box.config.write_text(box.config.read_text() + nt.toml_dumps({
        "tracing": {"otlp_endpoint": receiver.endpoint, "service_name": SERVICE}}))
    return box


def update_traces(receiver: OtlpReceiver, runs: int) -> dict[str, list]:
    receiver.wait_for(
        lambda spans: sum(1 for s in spans if s.service == SERVICE and s.name == "update") >= runs,
        15, f"{runs} update runs")
    return by_trace([s for s in receiver.spans() if s.service == SERVICE])


def test_an_attempt_over_two_runs_is_one_trace_of_its_steps(tmp_path, receiver):
    box = traced_box(tmp_path, receiver)
    r = box.update("download")
    assert r.returncode == 0 and "downloaded" in r.stdout, r.stdout + r.stderr
    context = box.root / "state" / "trace-context"
    assert context.exists(), "the attempt's trace context is kept for the next run"
    r = box.update("apply", "--no-reboot")
    assert r.returncode == 0 and "the boot target is set" in r.stdout, r.stdout + r.stderr

    traces = update_traces(receiver, 2)
    assert len(traces) == 1, {t: [s.name for s in g] for t, g in traces.items()}
    [spans] = traces.values()
    roots = [s for s in spans if s.name == "update"]
    by_command = {s.attributes["nusa.update.command"]: s for s in roots}
    assert set(by_command) == {"download", "apply"}, by_command
    first, second = by_command["download"], by_command["apply"]
    # The second run continues the first's trace: its root's parent is the
    # first run's root, across processes.
    assert first.parent_span_id == "" and second.parent_span_id == first.span_id, (first, second)
    assert second.parent_is_remote

    steps = {}
    for s in spans:
        if s.name != "update":
            steps.setdefault(s.name, []).append(s)
            parent = next(p for p in roots if p.span_id == s.parent_span_id)
            assert parent.start_ns <= s.start_ns and s.end_ns <= parent.end_ns, (s, parent)
    for name in ("check", "download"):
        assert [p.parent_span_id for p in steps[name]] == [first.span_id], (name, steps)
    for name in ("write", "verify", "brake_check", "arm", "switch_boot"):
        assert [p.parent_span_id for p in steps[name]] == [second.span_id], (name, steps)
        assert steps[name][0].attributes["nusa.update.step"] == name
    assert steps["download"][0].duration_ms > 0
    assert second.attributes["nusa.update.state"] == "Rebooting", second.attributes


def test_a_failed_step_is_marked_with_its_reason(tmp_path, receiver):
    box = traced_box(tmp_path, receiver)
    # The repository goes away: the check fails.
    repo = tmp_path / "fleet" / "repo"
    repo.rename(tmp_path / "fleet" / "gone")
    r = box.update("check")
    assert r.returncode != 0
    r = box.update("auto")
    traces = update_traces(receiver, 2)
    check = [s for g in traces.values() for s in g if s.name == "check"]
    assert check and check[-1].status_code == 2, check
    assert check[-1].attributes.get("nusa.update.error"), check[-1]
    # A failed check is not an attempt under way: no context is kept.
    assert not (box.root / "state" / "trace-context").exists()


def test_without_tracing_nothing_is_sent_and_no_context_kept(tmp_path, receiver):
    fleet = rb.Fleet(tmp_path / "fleet")
    box = rb.Box(tmp_path / "box", fleet)
    r = box.update("download")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (box.root / "state" / "trace-context").exists()
    assert receiver.spans() == []


def test_the_progress_file_is_readable_by_the_gateway_under_the_units_umask(tmp_path):
    """nusa-update.service runs with UMask=0077; nusad (another user) reads
    metrics_file to export the update's state (issue 17)."""
    import os
    import stat
    import subprocess
    fleet = rb.Fleet(tmp_path / "fleet")
    box = rb.Box(tmp_path / "box", fleet)
    r = subprocess.run([str(nt.nusactl_binary()), "update", "--config", str(box.config), "download"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                       preexec_fn=lambda: os.umask(0o077))
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = box.root / "metrics.prom"
    mode = stat.S_IMODE(metrics.stat().st_mode)
    assert mode == 0o644, oct(mode)
    assert "nusa_update_state" in metrics.read_text()
    # The state files stay the updater's.
    state = box.root / "state" / "state.json"
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0, oct(state.stat().st_mode)

"""Fixtures: nusad servers (one shared default server plus special-purpose ones).

Each server gets its own temporary directory with a model repository, a data
directory (where nusad writes its TLS CA and certificate) and nusad.log with
the server's stdout and stderr. When a test fails, the tail of the log of
every server it used is attached to the report.
"""
from __future__ import annotations

from typing import Iterator, Mapping

import pytest

import nusatest as nt

# Large enough for every request the tests send (8-row JSON bodies are ~0.5 MB),
# so the default server never depends on nusad's built-in body limit.
ROOMY_LIMITS = {"limits": {"max_body_bytes": 64 << 20}}


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str,
           models: Mapping, config: Mapping | None) -> Iterator[nt.NusadServer]:
    server = nt.start_server(name, tmp_path_factory.mktemp(f"nusad-{name}"), models, config)
    try:
        yield server
    finally:
        server.stop_checked(name)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    """The default server: tiny-cnn versions 1 and 3 (latest = 3), light batching."""
    models = {nt.MODEL: ((1, 3), nt.batching(max_batch_size=32, max_queue_delay_us=2000))}
    yield from _serve(tmp_path_factory, "default", models, ROOMY_LIMITS)


@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    """limits.max_body_bytes = 64 KiB, for 413 tests."""
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=32, max_queue_delay_us=2000))}
    yield from _serve(tmp_path_factory, "small-body", models,
                      {"limits": {"max_body_bytes": 65536}})


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    """Batches of up to 8, waiting up to 20 ms to fill one."""
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=8, max_queue_delay_us=20000))}
    yield from _serve(tmp_path_factory, "batching", models, ROOMY_LIMITS)


@pytest.fixture(scope="module")
def queue_full_server(tmp_path_factory) -> Iterator[nt.NusadServer]:
    """A queue of one, no batching wait, one instance: easy to overflow.

    max_batch_size equals the rows of one flood request: nusad rejects a request
    with more rows than max_batch_size (400), and with exactly that many no two
    requests can share a batch, so requests still run one at a time.
    """
    models = {nt.MODEL: ((1,), nt.batching(max_batch_size=nt.FLOOD_ROWS, max_queue_delay_us=0,
                                           max_queue_size=1, instances=1))}
    yield from _serve(tmp_path_factory, "queue-full", models, ROOMY_LIMITS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    seen: set[int] = set()
    for value in _servers_in(getattr(item, "funcargs", {}).values()):
        if id(value) in seen:
            continue
        seen.add(id(value))
        state = "running" if value.alive() else "NOT RUNNING"
        report.sections.append(
            (f"nusad log: {value.name} ({state}, {value.log_path})", value.log_tail()))


def _servers_in(values) -> Iterator[nt.NusadServer]:
    """NusadServer fixture values, also inside lists, tuples, dicts and objects
    with a `servers` attribute (fixtures that bundle several servers)."""
    for value in values:
        if isinstance(value, nt.NusadServer):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, nt.NusadServer))
        elif isinstance(value, dict):
            yield from (v for v in value.values() if isinstance(v, nt.NusadServer))
        elif hasattr(value, "servers"):
            try:
                yield from (v for v in list(value.servers) if isinstance(v, nt.NusadServer))
            except TypeError:
                pass

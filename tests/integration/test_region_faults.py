"""Regions that fail: under overload, with one region ("flaky") behind the
fault-injecting proxy (refusing, resetting, stalling or trickling) and a
healthy one ("steady"), no client ever sees an error; the failures show in
nusa_region_requests_total and flaky's circuit breaker opens. A region whose
copy of the model is broken (it answers 503) never causes a client error
either.

"steady" is the same region nusad reached through a second proxy that only
adds a few ms per chunk, so a healthy flaky is the cheaper choice and is
tried first: its failures are then retried on steady (or served locally).
"""
from __future__ import annotations

import pytest

import loadgen
import nusatest as nt
import slowmodel as sm
import spilltest as st
from faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(240)

FAULT_LOAD_S = 5.0
FLAKY_TIMEOUT_MS = 500     # per try on flaky: stalls and trickles end here
PROBE_MS = 250             # probes refresh nusa_region_breaker_state
BREAKER_OPEN = 2


class FaultEnv:
    def __init__(self, slow, region, work, slo_ms, flaky, steady):
        self.slow, self.region, self.work, self.slo_ms = slow, region, work, slo_ms
        self.flaky, self.steady = flaky, steady
        self.servers = [region]


@pytest.fixture(scope="module")
def fenv(tmp_path_factory):
    slow = sm.calibrated()
    region = st.start_region(tmp_path_factory.mktemp("nusad-region"), slow, models=(st.SLOW,))
    flaky = FaultProxy(region.host, region.port).start()
    steady = FaultProxy(region.host, region.port, "delay", delay_s=0.003).start()
    try:
        work = st.Workload.make(slow, seed=10)
        row_s = st.measure_row_s(region, work)
        slo_ms = st.slo_for(row_s)
        print(f"\n[faults] {slow.describe()}; idle request {row_s * 1000:.1f} ms; slo_ms = {slo_ms}")
        yield FaultEnv(slow, region, work, slo_ms, flaky, steady)
    finally:
        flaky.stop()
        steady.stop()
        region.stop_checked("region")


@pytest.fixture
def mains():
    started: list[nt.NusadServer] = []
    yield started
    for s in started:
        s.stop()


def outcomes(samples, region: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in nt.select(samples, "nusa_region_requests_total", region=region):
        out[s.labels.get("outcome", "?")] = out.get(s.labels.get("outcome", "?"), 0) + s.value
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.mark.parametrize("mode", ["refuse", "reset", "stall", "slow"])
def test_faulty_region_never_fails_a_client(tmp_path, fenv, mains, mode):
    fenv.flaky.set_mode("pass")
    regions = [st.region_entry("flaky", fenv.region, url=fenv.flaky.url, timeout_ms=FLAKY_TIMEOUT_MS),
               st.region_entry("steady", fenv.region, url=fenv.steady.url)]
    main = st.start_main(tmp_path / "main", fenv.slow, regions, slo_ms=fenv.slo_ms,
                         spill={"probe_interval_ms": PROBE_MS}, name=f"main-{mode}")
    mains.append(main)
    st.warm_up(main, fenv.work)
    before = nt.scrape_metrics(main)

    fenv.flaky.set_mode(mode, reset_after=3000, trickle_bytes=100, trickle_interval_s=0.05)
    states: list[float] = []

    def watch() -> None:
        states.extend(s.value for s in nt.select(nt.scrape_metrics(main), "nusa_region_breaker_state",
                                                 region="flaky"))

    try:
        s = loadgen.closed_loop(main, fenv.work.maker(), clients=st.LOAD_CLIENTS,
                                duration_s=FAULT_LOAD_S, output=sm.OUTPUT, on_tick=watch)
    finally:
        fenv.flaky.set_mode("pass")
    after = nt.scrape_metrics(main)
    flaky_out = diff(outcomes(after, "flaky"), outcomes(before, "flaky"))
    steady_out = diff(outcomes(after, "steady"), outcomes(before, "steady"))
    print(f"\n[flaky {mode}] {s.describe()}\n  flaky outcomes {flaky_out}, steady outcomes {steady_out}, "
          f"breaker states seen {sorted(set(states))}, proxy accepted {fenv.flaky.stats.accepted}")

    st.assert_no_errors(s, f"flaky region {mode}", allow_503=False)
    assert s.served("cloud:flaky") + s.served("cloud:steady") + s.served("local") == s.n, s.by_served()
    failures = sum(v for k, v in flaky_out.items() if k != "ok")
    assert failures > 0, f"no failed request to flaky recorded in {mode} mode: outcomes {flaky_out}"
    assert BREAKER_OPEN in states, \
        f"flaky's breaker never showed open (2) in {mode} mode; states seen {sorted(set(states))}"
    spilled = st.spilled(after, st.SLOW) - st.spilled(before, st.SLOW)
    attempts = sum(flaky_out.values()) + sum(steady_out.values())
    assert spilled == attempts, \
        f"nusa_spilled_total moved by {spilled:g}, region attempts recorded {attempts:g}"


def test_region_answering_503_never_fails_a_client(tmp_path_factory, tmp_path, fenv, mains):
    broken = st.start_region(tmp_path_factory.mktemp("nusad-broken-region"), fenv.slow, name="broken-region",
                             models=(st.SLOW,), model_bytes=b"this is not an ONNX model",
                             ready_path="/v2/health/live")
    mains.append(broken)
    body, headers = fenv.work.bodies[0]
    direct = nt.https1(broken, "POST", nt.infer_path(st.SLOW), body, headers)
    assert direct.status == 503, \
        f"precondition: a nusad with a broken model should answer 503 for it, got {direct}"

    regions = [st.region_entry("broken", broken)]
    main = st.start_main(tmp_path / "main", fenv.slow, regions, slo_ms=fenv.slo_ms,
                         spill={"probe_interval_ms": 60000}, name="main-broken-region")
    mains.append(main)
    st.warm_up(main, fenv.work)
    before, broken_before = nt.scrape_metrics(main), nt.scrape_metrics(broken)
    s = loadgen.closed_loop(main, fenv.work.maker(), clients=st.LOAD_CLIENTS,
                            duration_s=4.0, output=sm.OUTPUT)
    after = nt.scrape_metrics(main)
    out = diff(outcomes(after, "broken"), outcomes(before, "broken"))
    received = (st.requests_received(nt.scrape_metrics(broken), st.SLOW)
                - st.requests_received(broken_before, st.SLOW))
    print(f"\n[503 region] {s.describe()}\n  region outcomes {out}; the broken region received {received:g}")
    st.assert_no_errors(s, "region answering 503", allow_503=False)
    assert s.served("cloud:") == 0, f"answers from a region that has no working model: {s.by_served()}"
    assert sum(v for k, v in out.items() if k != "ok") > 0, \
        f"the broken region was never tried (outcomes {out}); the test proves nothing"

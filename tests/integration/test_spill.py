"""Spill-over to a region under overload: every answer correct, a share
served by the region (and counted as spilled, still in the run's second half),
against an objective the same load without spill misses; the latency and
throughput of the two runs are printed, not asserted (see the overload
test); residency (by model, by request, by client prefix) keeps
requests local (or 503 + Retry-After) and off the region; the spend cap.

traceparent propagation to the region is checked in test_tracing.py (one
trace across both processes, in a real OTLP receiver).
"""
from __future__ import annotations

import pytest

import loadgen
import nusatest as nt
import slowmodel as sm
import spilltest as st

pytestmark = pytest.mark.timeout(240)

LOAD_S = 6.0          # the overload comparison
SHORT_LOAD_S = 4.0    # the other scenarios
PINNED_CLIENTS = 24   # "the highest load"
SLO_BELOW_LOCAL = 1.5  # the spill run's objective: local-only p50 / this
COMPARE_CLIENTS = st.LOAD_CLIENTS  # the spill / no-spill comparison


class Env:
    def __init__(self, slow, region, work, row_s, slo_ms):
        self.slow, self.region, self.work, self.row_s, self.slo_ms = slow, region, work, row_s, slo_ms
        self.servers = [region]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    slow = sm.calibrated()
    region = st.start_region(tmp_path_factory.mktemp("nusad-region"), slow)
    try:
        work = st.Workload.make(slow)
        row_s = st.measure_row_s(region, work)
        slo_ms = st.slo_for(row_s)
        print(f"\n[spill] {slow.describe()}; idle request on the region {row_s * 1000:.1f} ms "
              f"(client side); slo_ms = {slo_ms}; {st.LOAD_CLIENTS} clients")
        yield Env(slow, region, work, row_s, slo_ms)
    finally:
        region.stop_checked("region")


@pytest.fixture
def mains():
    """Main servers started by a test (stopped after it; logs attached on failure)."""
    started: list[nt.NusadServer] = []
    yield started
    for s in started:
        s.stop()


def overload(main: nt.NusadServer, env: Env, *, clients: int = st.LOAD_CLIENTS,
             duration_s: float = SHORT_LOAD_S, model: str = st.SLOW, work: st.Workload | None = None,
             label: str = "", ramp_s: float = st.RAMP_S) -> loadgen.Summary:
    work = work or env.work
    s = loadgen.closed_loop(main, work.maker(model), clients=clients, duration_s=duration_s,
                            output=sm.OUTPUT, ramp_s=ramp_s)
    print(f"\n[{label or main.name}] {s.describe()}")
    return s


# --------------------------------------------------------------------------
# 8. Overload: spill vs local only


def test_overload_local_alone_misses_spills_and_counts_every_answer(tmp_path, env, mains):
    """The local-only run goes first: its median latency under this load sets
    the objective of the spill run (a third lower), so local alone clearly
    misses it, while main and region together can meet it with the region's
    queue well under it. Asserted: with spill on, at least 10% of the answers
    come from the region, some still in the second half of the run, none
    fails, and every one is counted where it was served. Not asserted: that
    spill beats local alone on latency or throughput. The two runs follow
    each other on the same cores as the region, so a busy neighbour in
    either run decides the ratio (it turned a typical 1.5x throughput into
    0.75x in a CI run); no margin both holds there and still says "beats".
    The ratios are printed with -s."""
    regions = [st.region_entry("sg-1", env.region)]

    nospill_main = st.start_main(tmp_path / "nospill", env.slow, regions, slo_ms=env.slo_ms,
                                 spill={"enabled": False}, name="main-nospill")
    mains.append(nospill_main)
    st.warm_up(nospill_main, env.work)
    region_before = nt.scrape_metrics(env.region)
    without = overload(nospill_main, env, clients=COMPARE_CLIENTS, duration_s=LOAD_S, label="spill off")
    st.assert_no_errors(without, "without spill", allow_503=True)
    assert without.served("cloud:") == 0, f"spill disabled, yet: {without.by_served()}"
    received = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
                - st.requests_received(region_before, st.SLOW))
    assert received == 0, f"spill disabled, yet the region received {received:g} requests"
    nospill_main.stop()
    ok = lambda r: r.status == 200  # noqa: E731
    p50_local, p99_local = without.percentile_ms(50, ok), without.percentile_ms(99, ok)
    slo_ms = max(st.MIN_SLO_MS, int(round(p50_local / SLO_BELOW_LOCAL)))
    print(f"[spill off] p50 {p50_local:.1f} ms -> slo_ms {slo_ms} for the spill run")
    # The premise (only the MIN_SLO_MS floor could break it): local alone
    # misses the objective for half of its answers or more.
    assert p50_local > slo_ms, f"local alone answered in p50 {p50_local:.1f} ms, within slo_ms {slo_ms}"

    main = st.start_main(tmp_path / "spill", env.slow, regions, slo_ms=slo_ms)
    mains.append(main)
    st.warm_up(main, env.work)
    before = nt.scrape_metrics(main)
    region_before = nt.scrape_metrics(env.region)
    with_spill = overload(main, env, clients=COMPARE_CLIENTS, duration_s=LOAD_S, label="spill on")
    st.assert_no_errors(with_spill, "with spill", allow_503=False)
    cloud = with_spill.served("cloud:sg-1")
    local = with_spill.served("local")
    assert cloud + local == with_spill.n, f"served-by other than local / cloud:sg-1: {with_spill.by_served()}"
    assert cloud > 0, f"nothing was spilled under overload: {with_spill.describe()}"
    assert local > 0, "nothing was served locally"

    def counted(samples):
        n = st.spilled(samples, st.SLOW, "sg-1") - st.spilled(before, st.SLOW, "sg-1")
        assert n == cloud, f"nusa_spilled_total moved by {n:g}, but {cloud} answers came from sg-1"
        ok = (nt.metric_sum(samples, "nusa_region_requests_total", region="sg-1", outcome="ok")
              - nt.metric_sum(before, "nusa_region_requests_total", region="sg-1", outcome="ok"))
        assert ok == cloud, f"nusa_region_requests_total{{sg-1, ok}} moved by {ok:g}, expected {cloud}"
        assert nt.metric_sum(samples, "nusa_wait_seconds_count", model=st.SLOW, kind="predicted") > 0, \
            "no nusa_wait_seconds{kind=predicted} observations"

    after = nt.wait_for_metrics(main, counted)
    received = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
                - st.requests_received(region_before, st.SLOW))
    assert received >= cloud, f"the region counted {received:g} requests, {cloud} answers came from it"
    reasons = {s.labels.get("reason"): s.value for s in nt.select(after, "nusa_spilled_total", model=st.SLOW)}
    share = cloud / with_spill.n
    p99_spill = with_spill.percentile_ms(99)
    waits = {}
    for kind in ("predicted", "measured"):
        n = (nt.metric_sum(after, "nusa_wait_seconds_count", model=st.SLOW, kind=kind)
             - nt.metric_sum(before, "nusa_wait_seconds_count", model=st.SLOW, kind=kind))
        total = (nt.metric_sum(after, "nusa_wait_seconds_sum", model=st.SLOW, kind=kind)
                 - nt.metric_sum(before, "nusa_wait_seconds_sum", model=st.SLOW, kind=kind))
        waits[kind] = f"{total / n * 1000:.1f} ms over {n:g}" if n else "none"
    print(f"[spill on] spilled share {share:.1%} ({cloud}/{with_spill.n}), reasons {reasons}; "
          f"p99 {p99_spill:.1f} ms vs slo {slo_ms} ms; mean local wait {waits}\n"
          f"  timeline {with_spill.timeline(1.0)}")
    ratio = p99_spill / p99_local
    print(f"[compare] p99 with spill {p99_spill:.1f} ms, without {p99_local:.1f} ms (ratio {ratio:.2f}); "
          f"throughput {with_spill.n / with_spill.duration_s:.0f}/s vs {without.n / without.duration_s:.0f}/s; "
          f"503s without spill: {without.statuses().get(503, 0)}")
    half = with_spill.results[0].started + with_spill.duration_s / 2
    late_cloud = sum(1 for r in with_spill.results if r.started >= half and r.served_by.startswith("cloud:"))
    assert late_cloud > 0, ("spilling stopped in the first half of the run and never resumed "
                            "(see test_region_is_used_again_after_a_burst)")
    # The queueing that spill avoids, measured in the same run as ratios: with
    # a closed loop of clients the local queue is bounded by their number, so
    # it shows as wait (median latency) and as throughput rather than as an
    # unbounded tail. The tail is reported, not asserted: on this two-core box
    # the region competes with the local engine for the same cores.
    p50_spill = with_spill.percentile_ms(50)
    rate_spill = with_spill.n / with_spill.duration_s
    rate_local = without.n / without.duration_s
    # Typical here: a 47-49% share, p50 0.6-0.8x and throughput 1.4-1.6x of
    # the local-only run. Latency and throughput are reported, not asserted
    # (timings belong in bench/, and on a shared two-core box the region and
    # the local engine compete for the same cores: a busy neighbour turned
    # 1.5x into 0.75x in a CI run); what is asserted is that spilling happens
    # under a load local alone cannot meet, and where the answers came from.
    assert share >= 0.1, f"only {share:.1%} spilled under a load local alone cannot meet"
    print(f"[compare] p50 {p50_spill:.1f} ms with spill vs {p50_local:.1f} ms without "
          f"({p50_spill / p50_local:.2f}x); throughput {rate_spill / rate_local:.2f}x; "
          f"p99 {p99_spill:.1f} ms against slo {slo_ms} ms")


# --------------------------------------------------------------------------
# 9. Residency


def assert_pinned_run(summary: loadgen.Summary, what: str) -> None:
    st.assert_no_errors(summary, what, allow_503=True)
    clouds = summary.served("cloud:")
    assert clouds == 0, f"{what}: {clouds} answers served by a region: {summary.by_served()}"
    others = {k: v for k, v in summary.by_served().items() if k != "local"}
    assert not others, f"{what}: 200s not served-by local: {others}"
    assert summary.served("local") > 0, f"{what}: nothing answered at all: {summary.describe()}"


def test_residency_keeps_requests_off_the_region(tmp_path, env, mains):
    regions = [st.region_entry("sg-1", env.region)]
    models = {st.SLOW: st.model_config(env.slo_ms),
              st.PINNED: st.model_config(env.slo_ms, residency="local")}
    main = st.start_main(tmp_path / "main", env.slow, regions, slo_ms=env.slo_ms, models=models)
    mains.append(main)
    st.warm_up(main, env.work, st.PINNED)
    st.warm_up(main, env.work, st.SLOW)

    # (a) the model's residency
    before, region_before = nt.scrape_metrics(main), nt.scrape_metrics(env.region)
    s = overload(main, env, clients=PINNED_CLIENTS, model=st.PINNED, label="residency=local model")
    assert_pinned_run(s, "model with residency local")
    region_after = nt.scrape_metrics(env.region)
    got = st.requests_received(region_after, st.PINNED) - st.requests_received(region_before, st.PINNED)
    assert got == 0, f"the region received {got:g} requests for {st.PINNED} (residency local)"
    rejected = s.statuses().get(503, 0)
    after = nt.scrape_metrics(main)
    counted = (nt.metric_sum(after, "nusa_spill_rejected_total", model=st.PINNED)
               - nt.metric_sum(before, "nusa_spill_rejected_total", model=st.PINNED))
    print(f"[residency=local model] 503 (with Retry-After): {rejected}; "
          f"nusa_spill_rejected_total moved by {counted:g}")
    assert st.spilled(after, st.PINNED) == 0
    assert counted == rejected, \
        f"{rejected} requests got 503, nusa_spill_rejected_total{{{st.PINNED}}} moved by {counted:g}"

    # (b) the request's own parameter, on a model that may spill
    pinned_work = st.Workload.make(env.slow, seed=9, parameters={"residency": "local"})
    region_before = nt.scrape_metrics(env.region)
    s = overload(main, env, clients=PINNED_CLIENTS, work=pinned_work, label="residency=local parameter")
    assert_pinned_run(s, "requests with parameter residency local")
    got = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
           - st.requests_received(region_before, st.SLOW))
    assert got == 0, f"the region received {got:g} requests pinned by their parameter"

    # (c) control: the same load without the pin does reach the region, so the
    # two checks above are not vacuous.
    region_before = nt.scrape_metrics(env.region)
    s = overload(main, env, clients=st.LOAD_CLIENTS, label="control, not pinned")
    st.assert_no_errors(s, "control", allow_503=False)
    got = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
           - st.requests_received(region_before, st.SLOW))
    assert s.served("cloud:sg-1") > 0 and got > 0, \
        f"control run did not spill (region received {got:g}): {s.describe()}"


def test_local_only_client_prefix(tmp_path, env, mains):
    regions = [st.region_entry("sg-1", env.region)]
    main = st.start_main(tmp_path / "main", env.slow, regions, slo_ms=env.slo_ms,
                         spill={"local_only_clients": ["127.0.0.1/32"]}, name="main-local-clients")
    mains.append(main)
    st.warm_up(main, env.work)
    region_before = nt.scrape_metrics(env.region)
    s = overload(main, env, clients=PINNED_CLIENTS, label="local_only_clients 127.0.0.1/32")
    assert_pinned_run(s, "client in local_only_clients")
    got = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
           - st.requests_received(region_before, st.SLOW))
    assert got == 0, f"the region received {got:g} requests from a pinned client prefix"
    assert st.spilled(nt.scrape_metrics(main), st.SLOW) == 0


# --------------------------------------------------------------------------
# 11. Spend cap


def test_spend_cap_limits_spilling(tmp_path, env, mains):
    regions = [st.region_entry("sg-1", env.region, requests_per_hour=5)]
    main = st.start_main(tmp_path / "main", env.slow, regions, slo_ms=env.slo_ms, name="main-capped")
    mains.append(main)
    st.warm_up(main, env.work)
    region_before = nt.scrape_metrics(env.region)
    s = overload(main, env, label="requests_per_hour = 5")
    st.assert_no_errors(s, "spend cap", allow_503=True)
    cloud = s.served("cloud:")
    assert 1 <= cloud <= 5, f"{cloud} answers from the region with a cap of 5 per hour: {s.by_served()}"
    n_spilled = st.spilled(nt.scrape_metrics(main), st.SLOW)
    assert n_spilled <= 5, f"nusa_spilled_total = {n_spilled:g} with a cap of 5 per hour"
    got = (st.requests_received(nt.scrape_metrics(env.region), st.SLOW)
           - st.requests_received(region_before, st.SLOW))
    assert got <= 5, f"the region received {got:g} requests with a cap of 5 per hour"


# --------------------------------------------------------------------------
# The region's expected latency must not lock it out for good


BURST = 48


def test_region_is_used_again_after_a_burst(tmp_path, env, mains):
    """A burst spills many requests at once, so the last of them wait in the
    region's queue and its measured latency jumps above the objective. Once the
    burst is over the region is idle and fast again: under the overload that
    follows, requests that local alone cannot serve in time must reach it again
    (in the last half of the run, not only at its start)."""
    main = st.start_main(tmp_path / "main", env.slow, [st.region_entry("sg-1", env.region)],
                         slo_ms=env.slo_ms, name="main-burst")
    mains.append(main)
    st.warm_up(main, env.work)
    burst = nt.fire_at_once(main, [env.work.bodies[i % st.POOL] for i in range(BURST)],
                            path=nt.infer_path(st.SLOW))
    assert all(r.status == 200 for r in burst), [str(r) for r in burst if r.status != 200][:3]
    burst_cloud = sum(nt.served_by(r) == "cloud:sg-1" for r in burst)
    st.settle(1.0)  # the region drains: it is idle from here on
    s = overload(main, env, label="after a burst")
    print(f"[after a burst] burst of {BURST}: {burst_cloud} spilled\n  timeline {s.timeline()}")
    st.assert_no_errors(s, "after a burst", allow_503=False)
    half = s.results[0].started + s.duration_s / 2
    late_cloud = sum(1 for r in s.results if r.started >= half and r.served_by.startswith("cloud:"))
    late_local = [r for r in s.results if r.started >= half and r.served_by == "local"]
    p50_local = sorted(r.latency_s for r in late_local)[len(late_local) // 2] * 1000 if late_local else 0
    assert late_cloud > 0 or p50_local <= env.slo_ms, (
        f"the region was never used again in the last {s.duration_s / 2:.1f} s, while local answers took "
        f"p50 {p50_local:.0f} ms against an objective of {env.slo_ms} ms (the burst spilled {burst_cloud}); "
        f"the gateway's estimate of the region seems stuck above the objective")


# --------------------------------------------------------------------------
# placement = "region"


def test_a_model_placed_in_the_region_is_answered_there_even_when_idle(tmp_path, env, mains):
    """placement = "region": every request goes to the region, with no load at
    all; a pinned request of the same model stays here."""
    regions = [st.region_entry("sg-1", env.region)]
    config = st.model_config(env.slo_ms)
    config["placement"] = "region"
    pinned_work = st.Workload.make(env.slow, parameters={"residency": "local"})
    main = st.start_main(tmp_path / "placed", env.slow, regions, slo_ms=env.slo_ms, models={st.SLOW: config})
    mains.append(main)
    s = loadgen.sequential(main, env.work.maker(), 10, sm.OUTPUT)
    st.assert_no_errors(s, "placement = region", allow_503=False)
    assert s.by_served() == {"cloud:sg-1": 10}, s.by_served()
    pinned = loadgen.sequential(main, pinned_work.maker(), 3, sm.OUTPUT)
    st.assert_no_errors(pinned, "pinned", allow_503=False)
    assert pinned.by_served() == {"local": 3}, pinned.by_served()
    after = nt.scrape_metrics(main)
    assert nt.metric_sum(after, "nusa_spilled_total", model=st.SLOW, reason="placement") == 10

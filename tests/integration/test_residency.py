"""Residency by jurisdiction under overload: two regions, real nusad
processes that declare `country = "SG"` and `country = "ID"`.

A model with `residency = ["ID"]` spills only to the ID region: the SG
region receives none of its requests (its request counter, and main's
counters for it, stay 0) even while the ID region is capped and SG is idle,
every answer is correct, and what can be served neither here nor in ID gets
503 with Retry-After. A model with `residency = "any"`, under the same
load, spills to both (so the SG check above is not vacuous).

Set-up and load come from spilltest.py (see there for how the objective is
derived from the region's idle latency).
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

import loadgen
import nusatest as nt
import slowmodel as sm
import spilltest as st

pytestmark = pytest.mark.timeout(240)

ID_MODEL = "id-mlp"    # the slow model under another name, residency = ["ID"]
ANY_MODEL = st.SLOW    # residency = "any" (the default, written out)
LOAD_S = 4.0
CLIENTS = 24
ID_CAP = 20            # requests per hour to the ID region in the ["ID"] run
ID_QUEUE = 2           # main's queue for the ["ID"] model: full under this load


class Env:
    def __init__(self, slow, sg, id_, work, slo_ms):
        self.slow, self.sg, self.id, self.work, self.slo_ms = slow, sg, id_, work, slo_ms
        self.servers = [sg, id_]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    slow = sm.calibrated()
    models = (ANY_MODEL, ID_MODEL)
    sg = st.start_region(tmp_path_factory.mktemp("nusad-sg"), slow, name="region-sg", models=models)
    try:
        id_ = st.start_region(tmp_path_factory.mktemp("nusad-id"), slow, name="region-id", models=models)
        try:
            work = st.Workload.make(slow)
            row_s = st.measure_row_s(id_, work)
            slo_ms = st.slo_for(row_s)
            print(f"\n[residency] {slow.describe()}; idle request on a region {row_s * 1000:.1f} ms; "
                  f"slo_ms = {slo_ms}; {CLIENTS} clients")
            yield Env(slow, sg, id_, work, slo_ms)
        finally:
            id_.stop_checked("region-id")
    finally:
        sg.stop_checked("region-sg")


@pytest.fixture
def mains():
    started: list[nt.NusadServer] = []
    yield started
    for s in started:
        s.stop()


def regions(env: Env, id_extra: dict | None = None) -> list[dict]:
    return [st.region_entry("sg-1", env.sg, country="SG"),
            st.region_entry("id-1", env.id, country="ID", **(id_extra or {}))]


def model(env: Env, residency, max_queue_size: int = 64) -> dict:
    config = st.model_config(env.slo_ms, max_queue_size=max_queue_size)
    config["residency"] = residency
    return config


def overload(main: nt.NusadServer, env: Env, model_name: str, label: str) -> loadgen.Summary:
    s = loadgen.closed_loop(main, env.work.maker(model_name), clients=CLIENTS, duration_s=LOAD_S,
                            output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"\n[{label}] {s.describe()}\n  timeline {s.timeline(1.0)}")
    return s


def create_key(main: nt.NusadServer, name: str, *flags: str) -> dict[str, str]:
    """A new API key (`nusactl keys create`), as the header that presents it."""
    out = subprocess.run([str(nt.nusactl_binary()), "keys", "--socket", str(main.admin_socket),
                          "create", name, *flags], capture_output=True, text=True, check=True)
    return {"Authorization": f"Bearer {out.stdout.strip()}"}


def warm_up_with(main: nt.NusadServer, env: Env, auth: dict[str, str]) -> None:
    """st.warm_up's requests, presenting a key (st.warm_up sends none)."""
    for i in range(3):
        path, body, headers, _ = env.work.maker(ANY_MODEL, auth)(0, i)
        assert nt.https1(main, "POST", path, body, headers).status == 200


def region_requests(samples, region: str) -> float:
    return nt.metric_sum(samples, "nusa_region_requests_total", region=region)


def received(server: nt.NusadServer) -> float:
    """Inference requests a region nusad counted, any model."""
    return nt.metric_sum(nt.scrape_metrics(server), "nusa_requests_total")


def test_a_model_resident_in_id_never_reaches_sg_under_overload(tmp_path, env, mains):
    """The ID region is capped at ID_CAP requests and main's queue is tiny, so
    most of the load can be served neither here nor in ID: it gets 503 with
    Retry-After, while SG stays idle and untouched."""
    main = st.start_main(tmp_path / "main", env.slow, regions(env, {"requests_per_hour": ID_CAP}),
                         slo_ms=env.slo_ms, models={ID_MODEL: model(env, ["ID"], ID_QUEUE)},
                         name="main-id")
    mains.append(main)
    st.warm_up(main, env.work, ID_MODEL)
    sg_before, id_before = received(env.sg), received(env.id)

    s = overload(main, env, ID_MODEL, 'residency = ["ID"]')
    st.assert_no_errors(s, 'residency = ["ID"]', allow_503=True)  # and every 503 has Retry-After
    served = s.by_served()
    assert set(served) <= {"local", "cloud:id-1"}, f"served outside here and ID: {served}"
    cloud = s.served("cloud:id-1")
    assert 1 <= cloud <= ID_CAP, f"{cloud} answers from id-1 (cap {ID_CAP}): {served}"
    assert s.served("local") > 0, f"nothing answered here: {s.describe()}"
    rejected = s.statuses().get(503, 0)
    assert rejected > 0, f"ID capped and the queue full, yet no 503: {s.describe()}"
    assert all(r.retry_after for r in s.results if r.status == 503)

    sg_got = received(env.sg) - sg_before
    assert sg_got == 0, f"the SG region received {sg_got:g} requests of a model resident in ID"
    assert received(env.id) - id_before >= cloud

    def counted(samples):
        assert region_requests(samples, "id-1") == cloud, \
            f"nusa_region_requests_total{{id-1}} = {region_requests(samples, 'id-1'):g}, {cloud} answers"

    after = nt.wait_for_metrics(main, counted)
    assert region_requests(after, "sg-1") == 0, "main sent requests to sg-1"
    assert st.spilled(after, ID_MODEL, "sg-1") == 0
    print(f"[residency = [\"ID\"]] id-1 answered {cloud}, 503 with Retry-After {rejected}, "
          f"sg-1 received {sg_got:g}; nusa_spill_rejected_total "
          f"{nt.metric_sum(after, 'nusa_spill_rejected_total', model=ID_MODEL):g}")


def test_a_model_with_residency_any_spills_to_both(tmp_path, env, mains):
    main = st.start_main(tmp_path / "main", env.slow, regions(env), slo_ms=env.slo_ms,
                         models={ANY_MODEL: model(env, "any")}, name="main-any")
    mains.append(main)
    st.warm_up(main, env.work, ANY_MODEL)
    s = overload(main, env, ANY_MODEL, 'residency = "any"')
    st.assert_no_errors(s, 'residency = "any"', allow_503=False)
    served = s.by_served()
    assert set(served) <= {"local", "cloud:sg-1", "cloud:id-1"}, served
    assert s.served("cloud:sg-1") > 0 and s.served("cloud:id-1") > 0, \
        f"did not spill to both regions: {served}"
    after = nt.scrape_metrics(main)
    assert region_requests(after, "sg-1") > 0 and region_requests(after, "id-1") > 0


def test_a_keys_residency_and_spill_permission_hold_under_overload(tmp_path, env, mains):
    """Per-key residency (issue 15): with API keys, a tenant whose key says
    `--residency ID` never reaches SG although its model may go anywhere,
    and a key with `--no-spill` never leaves the box."""
    main = st.start_main(tmp_path / "main", env.slow, regions(env), slo_ms=env.slo_ms,
                         models={ANY_MODEL: model(env, "any")}, name="main-keys",
                         extra={"auth": {"mode": "keys"}})
    mains.append(main)

    id_tenant = create_key(main, "id-tenant", "--residency", "ID")
    local_tenant = create_key(main, "box-only", "--no-spill")
    warm_up_with(main, env, id_tenant)
    sg_before = received(env.sg)

    s = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, id_tenant), clients=CLIENTS,
                            duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"\n[key --residency ID] {s.describe()}")
    st.assert_no_errors(s, "key --residency ID", allow_503=True)
    assert set(s.by_served()) <= {"local", "cloud:id-1"}, s.by_served()
    assert s.served("cloud:id-1") > 0, f"the ID tenant never spilled: {s.by_served()}"
    assert received(env.sg) - sg_before == 0, "the SG region received an ID tenant's request"

    before = received(env.sg) + received(env.id)
    s = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, local_tenant), clients=CLIENTS,
                            duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"[key --no-spill] {s.describe()}")
    st.assert_no_errors(s, "key --no-spill", allow_503=True)
    assert set(s.by_served()) <= {"local"}, s.by_served()
    assert received(env.sg) + received(env.id) - before == 0, "a --no-spill key's request left the box"


def test_a_spent_budget_with_stop_spill_keeps_requests_home(tmp_path, env, mains):
    """Spend budgets (issue 15): a key's daily budget with `stop-spill`;
    once what its requests cost in the regions reaches it, they are
    answered here (or 503) and no region sees them again that day; the
    cost report shows each answer's jurisdiction and the budget."""

    extra = {"auth": {"mode": "keys"},
             "pricing": {"regions": {"sg-1": {"per_request": 0.001},
                                     "id-1": {"per_request": 0.001}}},
             "budgets": {"keys": {"thrifty": {"daily": 0.005, "action": "stop-spill"}}}}
    main = st.start_main(tmp_path / "main", env.slow, regions(env), slo_ms=env.slo_ms,
                         models={ANY_MODEL: model(env, "any")}, name="main-budget", extra=extra)
    mains.append(main)
    auth = create_key(main, "thrifty")
    warm_up_with(main, env, auth)

    first = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, auth), clients=CLIENTS,
                                duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"\n[budget, first] {first.describe()}")
    st.assert_no_errors(first, "budget", allow_503=True)
    spilled_first = first.served("cloud:sg-1") + first.served("cloud:id-1")
    # 5 spills reach the budget; a few more may have been on their way.
    assert 5 <= spilled_first <= 5 + CLIENTS, first.by_served()
    before = received(env.sg) + received(env.id)
    second = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, auth), clients=CLIENTS,
                                 duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"[budget, second] {second.describe()}")
    st.assert_no_errors(second, "budget", allow_503=True)
    assert set(second.by_served()) <= {"local"}, second.by_served()
    assert received(env.sg) + received(env.id) - before == 0

    report = json.loads(subprocess.run(
        [str(nt.nusactl_binary()), "cost", "--socket", str(main.admin_socket), "--by", "key",
         "--json"], capture_output=True, text=True, check=True).stdout)
    [budget] = report["budgets"]
    assert budget["spill_stopped"] and budget["reached"] == 100, budget
    row = next(r for r in report["rows"] if r["group"] == "thrifty")
    assert row["region_requests"] == spilled_first, (row, spilled_first)
    answered = sum(1 for r in first.results + second.results if r.status == 200) + 3
    assert row["requests"] == answered, (row, answered)
    assert set(row["jurisdictions"]) <= {"local", "SG", "ID"}, row
    assert abs(row["cost"] - 0.001 * spilled_first) < 1e-9, row
    # Where the answers were made, by country: what the regions answered.
    by_j = json.loads(subprocess.run(
        [str(nt.nusactl_binary()), "cost", "--socket", str(main.admin_socket), "--by",
         "jurisdiction", "--json"], capture_output=True, text=True, check=True).stdout)
    rows = {r["group"]: r for r in by_j["rows"]}
    assert set(rows) <= {"local", "SG", "ID"} and "local" in rows, rows
    assert rows.get("SG", {}).get("requests", 0) == first.served("cloud:sg-1"), rows
    assert rows.get("ID", {}).get("requests", 0) == first.served("cloud:id-1"), rows


def test_a_keys_daily_spill_quota_keeps_its_requests_home_then_answers_429(tmp_path, env, mains):
    """A key's daily quota of bytes spilled to regions (issue 15): once its
    requests' bytes sent to regions reach it, they are answered here, and
    what here cannot take (a queue of 2 under this load) gets 429 naming
    `daily_spill_bytes` with Retry-After until UTC midnight instead of the
    box's 503."""

    row_bytes = 4 * sm.DIM                   # one FP32 row of the slow model's input
    quota_rows = 5
    main = st.start_main(tmp_path / "main", env.slow, regions(env), slo_ms=env.slo_ms,
                         models={ANY_MODEL: model(env, "any", ID_QUEUE)}, name="main-spill-quota",
                         extra={"auth": {"mode": "keys"}})
    mains.append(main)
    auth = create_key(main, "quota", "--daily-spill-bytes", str(quota_rows * row_bytes))
    warm_up_with(main, env, auth)

    first = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, auth), clients=CLIENTS,
                                duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"\n[spill quota, first] {first.describe()}\n  timeline {first.timeline(1.0)}")
    assert not first.errors, [r.error for r in first.errors[:5]]
    assert set(first.statuses()) <= {200, 429, 503}, first.statuses()
    spilled = first.served("cloud:sg-1") + first.served("cloud:id-1")
    # The quota's rows; requests already past the check when it ran out
    # may add at most one row each.
    assert quota_rows <= spilled <= quota_rows + CLIENTS, first.by_served()
    assert first.statuses().get(429, 0) > 0, f"the quota ran out, yet no 429: {first.describe()}"

    before = received(env.sg) + received(env.id)
    second = loadgen.closed_loop(main, env.work.maker(ANY_MODEL, auth), clients=CLIENTS,
                                 duration_s=LOAD_S, output=sm.OUTPUT, ramp_s=st.RAMP_S)
    print(f"[spill quota, second] {second.describe()}")
    assert not second.errors, [r.error for r in second.errors[:5]]
    assert set(second.by_served()) <= {"local"}, second.by_served()
    assert set(second.statuses()) <= {200, 429}, second.statuses()
    assert second.statuses().get(429, 0) > 0, second.describe()
    assert received(env.sg) + received(env.id) - before == 0, "a request left past the quota"

    # What a refused client reads.
    path, body, headers, _ = env.work.maker(ANY_MODEL, auth)(0, 0)
    burst = nt.fire_at_once(main, [(body, headers)] * 12, path)
    refused = [r for r in burst if r.status == 429]
    assert refused and {r.status for r in burst} <= {200, 429}, [str(r) for r in burst]
    answer = refused[0].json()
    assert answer["limit"] == "daily_spill_bytes" and "spilled to regions" in answer["error"], answer
    assert str(quota_rows * row_bytes) in answer["error"], answer
    now = int(time.time())
    assert abs(int(refused[0].headers["retry-after"]) - (86400 - now % 86400)) <= 5

    after = nt.scrape_metrics(main)
    limited = nt.metric_sum(after, "nusa_requests_total", outcome="over_limit")
    assert limited == first.statuses()[429] + second.statuses()[429] + len(refused), limited

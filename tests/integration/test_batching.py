"""Dynamic batching: concurrent requests share batches yet get their own rows back."""
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)

# 16 requests, each different: eight 1-row requests and eight 2-row requests,
# interleaved, so a mix-up between requests (or rows) shows in the golden compare.
PLANS = [rows for i in range(8) for rows in ([i], [i, (i + 3) % 8])]


def test_concurrent_requests_are_batched(batching_server):
    bodies, expected = [], []
    for rows in PLANS:
        x, e = nt.golden_rows(rows)
        bodies.append(nt.binary_infer_request(x, binary_output=False))
        expected.append(e)

    # Counted from here: loading ran one warm-up batch before traffic.
    before = nt.scrape_metrics(batching_server)
    base = {name: nt.metric_sum(before, name, model=nt.MODEL)
            for name in ("nusa_batch_size_count", "nusa_batch_size_sum")}
    base_one = nt.bucket(before, "nusa_batch_size", 1.0, model=nt.MODEL)
    responses = nt.fire_at_once(batching_server, bodies)
    for rows, r, e in zip(PLANS, responses, expected):
        try:
            nt.assert_infer_ok(r, e)
        except AssertionError as err:
            raise AssertionError(f"request with golden rows {rows}: {err}") from None

    n_requests, n_rows = len(PLANS), sum(map(len, PLANS))

    def check(samples):
        count = nt.metric_sum(samples, "nusa_batch_size_count", model=nt.MODEL) - base["nusa_batch_size_count"]
        total = nt.metric_sum(samples, "nusa_batch_size_sum", model=nt.MODEL) - base["nusa_batch_size_sum"]
        size_one = nt.bucket(samples, "nusa_batch_size", 1.0, model=nt.MODEL) - base_one
        # Every request has been executed, in rows or in requests.
        assert total in (n_requests, n_rows), \
            f"nusa_batch_size_sum {total}: expected {n_requests} (requests) or {n_rows} (rows)"
        assert 1 <= count, "no batch observed"
        assert size_one < count, f"no batch larger than 1 ({size_one} of {count} had size 1)"
        assert count < n_requests, \
            f"{count} batches for {n_requests} concurrent requests: nothing was batched together"

    nt.wait_for_metrics(batching_server, check)

"""Queue full: with a one-slot queue and one instance, a flood of large requests
must get some 503s (with Retry-After and a JSON error); every other request must
still be answered correctly, and the server keeps serving afterwards."""
import email.utils

import numpy as np
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(300)

ROWS = nt.FLOOD_ROWS  # golden rows tiled: a few ms of compute per request
# More concurrency each round, until a 503 shows up. It depends on timing, so
# rounds repeat; the test fails if no round ever overflows the queue.
ROUNDS = (64, 64, 128, 192)


def check_503(r: nt.Response) -> None:
    nt.assert_error(r, 503)
    retry_after = r.headers.get("retry-after")
    assert retry_after, f"503 without Retry-After: {r}"
    assert retry_after.strip().isdigit() or email.utils.parsedate_to_datetime(retry_after), \
        f"bad Retry-After {retry_after!r}"


def test_queue_full_gives_503(queue_full_server):
    inputs, probs = nt.golden()
    x = np.tile(inputs, (ROWS // len(inputs), 1, 1, 1))
    expected = np.tile(probs, (ROWS // len(probs), 1))
    request = nt.binary_infer_request(x, binary_output=True)

    seen = []
    for n in ROUNDS:
        responses = nt.fire_at_once(queue_full_server, [request] * n)
        rejected = [r for r in responses if r.status == 503]
        for r in rejected:
            check_503(r)
        for r in responses:
            if r.status != 503:
                nt.assert_infer_ok(r, expected, binary=True)
        seen.append(f"{len(rejected)}/{n}")
        if rejected:
            break
    else:
        pytest.fail(f"no 503 from a one-slot queue under load (503s per round: {seen})")

    nt.good_infer_http1(queue_full_server)

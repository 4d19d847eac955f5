"""HTTP/3 with the aioquic client in h3client.py (certificate verified against the CA)."""
import pytest

import nusatest as nt
from h3client import H3Request, h3_request, h3_requests

pytestmark = pytest.mark.timeout(120)


def test_health(server):
    live, ready = h3_requests(server, [H3Request("GET", "/v2/health/live"),
                                       H3Request("GET", "/v2/health/ready")])
    assert live.status == 200 and live.json() == {"live": True}, str(live)
    assert ready.status == 200 and ready.json() == {"ready": True}, str(ready)


def test_model_metadata(server):
    r = h3_request(server, "GET", f"/v2/models/{nt.MODEL}")
    assert r.status == 200, str(r)
    assert r.json()["name"] == nt.MODEL


def test_json_infer(server):
    x, expected = nt.golden_rows([0, 1, 2, 3])
    r = h3_request(server, "POST", nt.infer_path(), nt.json_infer_body(x), nt.JSON_HEADERS)
    nt.assert_infer_ok(r, expected, version="3", binary=False)


@pytest.mark.parametrize("binary_output", [True, False], ids=["out-binary", "out-json"])
def test_binary_infer(server, binary_output):
    x, expected = nt.golden()
    body, headers = nt.binary_infer_request(x, binary_output=binary_output)
    assert "Inference-Header-Content-Length" in headers
    r = h3_request(server, "POST", nt.infer_path(), body, headers)
    nt.assert_infer_ok(r, expected, binary=binary_output)


def test_error_over_http3(server):
    r = h3_request(server, "POST", nt.infer_path(version=2),
                   nt.json_infer_body(nt.golden_rows([0])[0]), nt.JSON_HEADERS)
    nt.assert_error(r, 404)


def test_concurrent_streams_on_one_connection(server):
    """Many requests in flight on one QUIC connection; each gets its own answer."""
    plans = [[i] for i in range(8)] + [[i, (i + 5) % 8] for i in range(8)]
    reqs, expected = [], []
    for n, rows in enumerate(plans):
        x, e = nt.golden_rows(rows)
        if n % 2:
            body, headers = nt.binary_infer_request(x, binary_output=n % 4 == 1)
        else:
            body, headers = nt.json_infer_body(x), nt.JSON_HEADERS
        reqs.append(H3Request("POST", nt.infer_path(), body, headers))
        expected.append(e)
    reqs.append(H3Request("GET", "/v2/health/ready"))
    responses = h3_requests(server, reqs)
    for n, (r, e) in enumerate(zip(responses, expected)):
        try:
            nt.assert_infer_ok(r, e)
        except AssertionError as err:
            raise AssertionError(f"request {n} (rows {plans[n]}): {err}") from None
    assert responses[-1].status == 200

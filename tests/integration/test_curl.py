"""curl over HTTP/1.1 and HTTP/2 (TLS, CA-verified): health, metadata, JSON infer."""
import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["1.1", "2"], ids=["http1.1", "http2"])
def http(request) -> str:
    return request.param


def get(server, path, http, **kw) -> nt.Response:
    r = nt.curl(server, "GET", path, http=http, **kw)
    check_common(server, r, http)
    return r


def post_json(server, path, body, http) -> nt.Response:
    r = nt.curl(server, "POST", path, http=http, body=body, headers=nt.JSON_HEADERS)
    check_common(server, r, http)
    return r


def check_common(server, r: nt.Response, http: str) -> None:
    """The protocol curl was asked for was used, and alt-svc advertises h3 on our port."""
    assert r.http_version == http, f"curl --http{http} got HTTP/{r.http_version}"
    alt_svc = r.headers.get("alt-svc", "")
    assert "h3" in alt_svc and str(server.port) in alt_svc, \
        f"alt-svc should advertise h3 on port {server.port}: {r.headers}"


def test_health(server, http):
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        r = get(server, path, http)
        assert r.status == 200, str(r)
        assert r.json() == {key: True}


def test_server_metadata(server, http):
    r = get(server, "/v2", http)
    assert r.status == 200, str(r)
    meta = r.json()
    assert isinstance(meta.get("name"), str) and meta["name"], meta
    assert isinstance(meta.get("version"), str) and meta["version"], meta
    assert isinstance(meta.get("extensions"), list), meta


def test_model_metadata(server, http):
    r = get(server, f"/v2/models/{nt.MODEL}", http)
    assert r.status == 200, str(r)
    meta = r.json()
    assert meta["name"] == nt.MODEL
    assert sorted(meta["versions"], key=int) == ["1", "3"], meta
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]


def test_versioned_metadata_and_ready(server, http):
    for v in ("1", "3"):
        r = get(server, f"/v2/models/{nt.MODEL}/versions/{v}", http)
        assert r.status == 200, str(r)
        assert r.json()["name"] == nt.MODEL
        assert get(server, f"/v2/models/{nt.MODEL}/versions/{v}/ready", http).status == 200
    assert get(server, f"/v2/models/{nt.MODEL}/ready", http).status == 200
    nt.assert_error(get(server, f"/v2/models/{nt.MODEL}/versions/2", http), 404)
    nt.assert_error(get(server, "/v2/models/no-such-model", http), 404, ["no-such-model"])


def test_json_infer_all_golden_rows(server, http):
    x, expected = nt.golden()
    r = post_json(server, nt.infer_path(), nt.json_infer_body(x), http)
    header = nt.assert_infer_ok(r, expected, version="3", binary=False)
    assert header["model_name"] == nt.MODEL


def test_json_infer_nested_data(server, http):
    x, expected = nt.golden_rows([2, 3, 4])
    r = post_json(server, nt.infer_path(), nt.json_infer_body(x, nested=True), http)
    nt.assert_infer_ok(r, expected, binary=False)


@pytest.mark.parametrize("version", ["1", "3"])
def test_json_infer_explicit_version(server, http, version):
    x, expected = nt.golden_rows([6, 7])
    r = post_json(server, nt.infer_path(version=version), nt.json_infer_body(x), http)
    nt.assert_infer_ok(r, expected, version=version)

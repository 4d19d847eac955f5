"""tritonclient.http over https (verified against nusad's CA), binary and JSON tensors."""
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import nusatest as nt

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def triton(server):
    # ssl_options["ca_certs"] is the CA file geventhttpclient loads into its
    # default SSL context (ssl.create_default_context(cafile=...)); hostname
    # checking stays on (insecure=False) and matches the 127.0.0.1 IP SAN.
    client = httpclient.InferenceServerClient(
        url=server.authority, ssl=True, ssl_options={"ca_certs": str(server.ca_path)},
        insecure=False, connection_timeout=30, network_timeout=60)
    yield client
    client.close()


def make_inputs(x: np.ndarray, binary: bool) -> list:
    inp = httpclient.InferInput(nt.INPUT, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp]


def test_health(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready(nt.MODEL)
    assert triton.is_model_ready(nt.MODEL, "1")


def test_model_metadata(triton):
    meta = triton.get_model_metadata(nt.MODEL)
    assert meta["name"] == nt.MODEL
    assert sorted(meta["versions"], key=int) == ["1", "3"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == \
        [("input", "FP32", [-1, 3, 32, 32])]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == \
        [("probs", "FP32", [-1, 10])]
    assert triton.get_model_metadata(nt.MODEL, "1")["name"] == nt.MODEL


@pytest.mark.parametrize("rows", [[5], [0, 3, 6, 7]], ids=["batch1", "batch4"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["out-binary", "out-json"])
@pytest.mark.parametrize("binary_in", [True, False], ids=["in-binary", "in-json"])
def test_infer(triton, rows, binary_in, binary_out):
    x, expected = nt.golden_rows(rows)
    result = triton.infer(nt.MODEL, make_inputs(x, binary_in),
                          outputs=[httpclient.InferRequestedOutput(nt.OUTPUT, binary_data=binary_out)])
    nt.assert_probs(result.as_numpy(nt.OUTPUT), expected)
    out = result.get_output(nt.OUTPUT)
    assert ("binary_data_size" in (out.get("parameters") or {})) == binary_out, out
    assert str(result.get_response()["model_version"]) == "3"


def test_infer_default_outputs_and_version(triton):
    # No outputs listed: tritonclient asks for binary_data_output; either form must decode.
    x, expected = nt.golden_rows([1, 2])
    result = triton.infer(nt.MODEL, make_inputs(x, True), model_version="1")
    nt.assert_probs(result.as_numpy(nt.OUTPUT), expected)
    assert str(result.get_response()["model_version"]) == "1"


def test_errors_reach_the_client(triton):
    x, _ = nt.golden_rows([0])
    with pytest.raises(InferenceServerException) as err:
        triton.infer("no-such-model", make_inputs(x, True))
    assert err.value.status() == "404"
    assert "no-such-model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        triton.infer(nt.MODEL, make_inputs(x, True), model_version="2")
    assert err.value.status() == "404"
    # The client is still usable afterwards.
    assert triton.is_server_ready()

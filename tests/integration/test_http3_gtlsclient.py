"""HTTP/3 with ngtcp2's gtlsclient (Debian package ngtcp2-client).

gtlsclient cannot be given a CA file and does not verify the server
certificate (see nusatest.gtlsclient), so these requests are unverified.
"""
import shutil

import pytest

import nusatest as nt

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def have_gtlsclient():
    assert shutil.which("gtlsclient"), "gtlsclient not found: install ngtcp2-client (scripts/setup)"


def test_get_ready(server, tmp_path):
    r = nt.gtlsclient(server, "/v2/health/ready", tmp_path)
    assert r.status == 200, str(r)
    assert r.json() == {"ready": True}


def test_post_json_infer(server, tmp_path):
    x, expected = nt.golden_rows([3, 4])
    r = nt.gtlsclient(server, nt.infer_path(), tmp_path, data=nt.json_infer_body(x))
    nt.assert_infer_ok(r, expected, version="3", binary=False)

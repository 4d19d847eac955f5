"""Saying why spill is not happening (issue 16): a region whose certificate
chain is refused fails its probes at warning level, once (not once per
probe), with the failure's class, and the metrics show each region's last
probe outcome; a region that answers is logged as reachable."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

import nusatest as nt
import spilltest as st

pytestmark = pytest.mark.timeout(120)


def test_a_refused_certificate_chain_is_logged_once_and_shown_in_the_metrics(tmp_path):
    for d in ("region", "main"):
        (tmp_path / d).mkdir()
    region = nt.NusadServer("region", tmp_path / "region", None).start()
    try:
        # A CA that did not sign the region's certificate.
        other_ca = tmp_path / "other-ca.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(tmp_path / "other.key"),
                        "-out", str(other_ca), "-days", "2", "-subj", "/CN=Not The Region CA"],
                       check=True, capture_output=True)
        regions = [st.region_entry("good", region),
                   st.region_entry("refused", region, ca=str(other_ca))]
        main = nt.NusadServer("main", tmp_path / "main", None, {
            "regions": regions, "spill": {"enabled": True, "probe_interval_ms": 200}}).start()
        try:
            def probed(samples):
                failures = nt.metric_sum(samples, "nusa_region_probe_failures_total",
                                         region="refused", **{"class": "tls"})
                assert failures >= 5, f"{failures} tls probe failures so far"

            after = nt.wait_for_metrics(main, probed, timeout=30)
            assert nt.metric_sum(after, "nusa_region_probe_up", region="refused") == 0
            assert nt.metric_sum(after, "nusa_region_probe_up", region="good") == 1
            assert nt.metric_sum(after, "nusa_region_probe_failures_total", region="good") == 0

            log = main.log_path.read_text()
            warned = [l for l in log.splitlines() if "region probe failed" in l]
            assert len(warned) == 1, f"{len(warned)} warnings for one lasting failure:\n" + "\n".join(warned)
            [line] = warned
            assert "WARN" in line and "refused" in line and "class=\"tls\"" in line, line
            assert re.search(r"certificate", line), line
            reachable = [l for l in log.splitlines() if "region reachable" in l]
            assert len(reachable) == 1 and "good" in reachable[0] and "INFO" in reachable[0], reachable
        finally:
            main.stop_checked("main")
    finally:
        region.stop_checked("region")

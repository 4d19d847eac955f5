"""Access control and the audit log (issue 15): API keys on the public port
(401 with WWW-Authenticate, 403 for the wrong model or role, 429 with
Retry-After naming the limit), keys managed with `nusactl keys` over the
admin socket and kept across a restart, real clients presenting them
(curl, tritonclient's `headers=`, aioquic over HTTP/3), the secure default
off loopback, every admin action in a hash-chained audit log that `nusactl
audit verify` checks, and no key ever in a log, a metric or an error.
"""
from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

import h3client
import nusatest as nt
import slowmodel as sm

pytestmark = pytest.mark.timeout(300)


def nusactl(s: nt.NusadServer, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(nt.nusactl_binary()), *args[:1], "--socket", str(s.admin_socket), *args[1:]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def create_key(s: nt.NusadServer, name: str, *flags: str) -> str:
    out = json.loads(nusactl(s, "keys", "create", name, *flags, "--json").stdout)
    assert out["key"]["name"] == name and out["secret"].startswith("nusa_"), out
    return out["secret"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def infer(s: nt.NusadServer, headers: dict[str, str], model: str = nt.MODEL) -> nt.Response:
    x, _ = nt.golden()
    body, h = nt.binary_infer_request(x)
    return nt.https1(s, "POST", nt.infer_path(model), body, {**h, **headers})


@pytest.fixture
def server(tmp_path):
    s = nt.NusadServer("auth", tmp_path, None, {"auth": {"mode": "keys"}}).start()
    try:
        yield s
    finally:
        s.stop_checked()


def test_keys_roles_models_and_real_clients(server):
    s = server
    x, expected = nt.golden()
    # Health stays open (load balancers); everything else wants a key.
    assert nt.https1(s, "GET", "/v2/health/ready").status == 200
    r = infer(s, {})
    nt.assert_error(r, 401, ["no API key"])
    assert r.headers["www-authenticate"].startswith("Bearer realm=\"nusa\""), r.headers
    nt.assert_error(nt.https1(s, "GET", "/v2/models/tiny-cnn"), 401, ["API key"])

    user = create_key(s, "mobile-app", "--model", "tiny-*")
    admin = create_key(s, "ops", "--role", "admin")
    other = create_key(s, "other-team", "--model", "resnet")

    nt.assert_infer_ok(infer(s, bearer(user)), expected)
    nt.assert_infer_ok(infer(s, {"x-api-key": admin}), expected)
    # A wrong secret under a real prefix, an unknown prefix and a malformed
    # key read the same to the caller.
    wrong = user[:-4] + ("AAAA" if not user.endswith("AAAA") else "BBBB")
    for bad, why in [(wrong, "not valid"), ("nusa_00000000_" + "A" * 43, "not valid"),
                     ("hunter2", "malformed")]:
        r = infer(s, bearer(bad))
        nt.assert_error(r, 401, [why])
        assert "invalid" in r.headers["www-authenticate"], r.headers
    # The wrong model, the wrong role.
    nt.assert_error(infer(s, bearer(other)), 403, ["other-team", "tiny-cnn"])
    nt.assert_error(nt.https1(s, "GET", "/v2/models/tiny-cnn", headers=bearer(other)), 403,
                    ["other-team"])
    nt.assert_error(nt.https1(s, "POST", "/v2/repository/index", headers=bearer(user)), 403,
                    ["role admin"])
    # An admin key may use the admin API on the public port.
    r = nt.https1(s, "POST", "/v2/repository/index", headers=bearer(admin))
    assert r.status == 200 and r.json()[0]["name"] == "tiny-cnn", r

    # curl (HTTP/2), tritonclient with headers=, aioquic over HTTP/3.
    body, h = nt.binary_infer_request(x)
    r = nt.curl(s, "POST", nt.infer_path(), http="2", body=body, headers={**h, "x-api-key": user})
    nt.assert_infer_ok(r, expected)
    tc = httpclient.InferenceServerClient(url=s.authority, ssl=True,
                                          ssl_options={"ca_certs": str(s.ca_path)}, insecure=False)
    try:
        inp = httpclient.InferInput(nt.INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        res = tc.infer(nt.MODEL, [inp], headers=bearer(user))
        nt.assert_probs(res.as_numpy("probs"), expected)
        with pytest.raises(InferenceServerException, match="no API key"):
            tc.infer(nt.MODEL, [inp])
    finally:
        tc.close()
    [ok, refused] = h3client.h3_requests(s, [
        h3client.H3Request("POST", nt.infer_path(), body, {**h, **bearer(user)}),
        h3client.H3Request("POST", nt.infer_path(), body, dict(h)),
    ])
    nt.assert_infer_ok(ok, expected)
    nt.assert_error(refused, 401, ["no API key"])

    # Revoked and expired keys; rotation.
    nusactl(s, "keys", "revoke", "other-team")
    nt.assert_error(infer(s, bearer(other)), 401, ["revoked"])
    soon = create_key(s, "temp", "--expires-at", str(int(time.time()) + 2))
    nt.assert_infer_ok(infer(s, bearer(soon)), expected)
    time.sleep(3)
    nt.assert_error(infer(s, bearer(soon)), 401, ["expired"])
    rotated = json.loads(nusactl(s, "keys", "rotate", "mobile-app", "--json").stdout)["secret"]
    nt.assert_error(infer(s, bearer(user)), 401, ["not valid"])
    nt.assert_infer_ok(infer(s, bearer(rotated)), expected)
    listed = {k["name"]: k for k in json.loads(nusactl(s, "keys", "list", "--json").stdout)["keys"]}
    assert set(listed) == {"mobile-app", "ops", "other-team", "temp"}, listed
    assert listed["other-team"]["revoked_at"] is not None

    # The records survive a restart; the secrets do not appear anywhere.
    assert s.stop() == 0
    s.start()
    nt.assert_infer_ok(infer(s, bearer(rotated)), expected)
    nt.assert_error(infer(s, bearer(other)), 401, ["revoked"])
    secrets = [user, admin, other, soon, rotated]
    assert_no_secret_anywhere(s, secrets)


def assert_no_secret_anywhere(s: nt.NusadServer, secrets: list[str]) -> None:
    texts = {"log": s.log_path.read_bytes(),
             "metrics": "\n".join(f"{x.name} {x.labels}" for x in nt.scrape_metrics(s)).encode()}
    for f in s.data_dir.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".jsonl", ".json", ".token"):
            texts[str(f)] = f.read_bytes()
    texts["keys.redb"] = (s.data_dir / "keys.redb").read_bytes()
    for secret in secrets:
        for where, text in texts.items():
            assert secret.encode() not in text, f"a key's secret is in {where}"
            # Not even the part after the public prefix.
            assert secret.encode()[14:] not in text, f"a key's secret part is in {where}"


def test_limits_answer_429_naming_the_limit(server):
    s = server
    _, expected = nt.golden()
    burst = create_key(s, "bursty", "--rps", "1", "--burst", "2")
    codes = [infer(s, bearer(burst)) for _ in range(4)]
    assert [r.status for r in codes[:2]] == [200, 200], [str(r) for r in codes]
    over = [r for r in codes[2:] if r.status == 429]
    assert over, [str(r) for r in codes]
    body = over[0].json()
    assert body["limit"] == "rps" and "bursty" in body["error"], body
    assert int(over[0].headers["retry-after"]) >= 1
    time.sleep(1.2)
    nt.assert_infer_ok(infer(s, bearer(burst)), expected)

    daily = create_key(s, "daily", "--daily-requests", "2")
    assert [infer(s, bearer(daily)).status for _ in range(2)] == [200, 200]
    r = infer(s, bearer(daily))
    assert r.status == 429 and r.json()["limit"] == "daily_requests", r
    # Until the next UTC midnight.
    now = int(time.time())
    assert abs(int(r.headers["retry-after"]) - (86400 - now % 86400)) <= 5, r.headers


def test_concurrency_limits_of_a_key_and_of_its_calls_to_one_model(tmp_path):
    """Requests in flight at once: a model whose one row takes about 600 ms
    holds the first request while the others arrive."""
    slow = sm.scaled(sm.calibrated(), 600 / sm.TARGET_MS)
    models = nt.make_model_repo(tmp_path / "models", {"slow": ([1], None), "twin": ([1], None)},
                                model_files={"slow": slow.model, "twin": slow.model})
    s = nt.NusadServer("auth-conc", tmp_path, models, {"auth": {"mode": "keys"}}).start()
    # A new row for every call, so that none is a cache hit.
    seeds = iter(range(1000))

    def call(key: str, model: str) -> tuple[nt.Response, np.ndarray]:
        x = sm.rows(1, next(seeds))
        body, h = nt.infer_request({sm.INPUT: x})
        return nt.https1(s, "POST", nt.infer_path(model), body, {**h, **bearer(key)}), x

    def assert_ok(answer: tuple[nt.Response, np.ndarray]) -> None:
        r, x = answer
        assert r.status == 200, r
        sm.assert_close(nt.decode_infer_response(r)[1][sm.OUTPUT], slow.expected(x))

    def while_one_is_in_flight(first: tuple[str, str], then: list[tuple[str, str]]):
        with ThreadPoolExecutor(1 + len(then)) as ex:
            held = ex.submit(call, *first)
            time.sleep(0.25)
            assert not held.done(), f"the first request was not in flight any more: {held.result()}"
            answers = [f.result() for f in [ex.submit(call, *t) for t in then]]
            return held.result(), answers

    try:
        one = create_key(s, "one-at-a-time", "--max-concurrent", "1")
        per_model = create_key(s, "per-model", "--model-limit", "slow:max_concurrent=1")
        listed = nusactl(s, "keys", "list").stdout
        assert "slow: 1 at once" in listed, listed

        # The key's own limit: a second request of any model is refused.
        first, [(second, _)] = while_one_is_in_flight((one, "slow"), [(one, "twin")])
        assert_ok(first)
        assert second.status == 429, second
        body = second.json()
        assert body["limit"] == "concurrency" and body["scope"] == "key", body
        assert "one-at-a-time" in body["error"] and second.headers["retry-after"] == "1", second
        # The slot is given back with the answer.
        assert_ok(call(one, "twin"))

        # The key's limit for one model: the same model refused, another served.
        first, [(same, _), other] = while_one_is_in_flight(
            (per_model, "slow"), [(per_model, "slow"), (per_model, "twin")])
        assert_ok(first)
        assert same.status == 429, same
        assert same.json()["limit"] == "concurrency", same
        assert same.json()["scope"] == "model slow", same
        assert_ok(other)
        limited = nt.metric_sum(nt.scrape_metrics(s), "nusa_requests_total", outcome="over_limit")
        assert limited == 2, f"nusa_requests_total{{outcome=over_limit}} = {limited}"
    finally:
        s.stop_checked()


def test_the_default_off_loopback_refuses_anonymous_requests(tmp_path):
    s = nt.NusadServer("open-net", tmp_path, None)
    s.listen_host = "0.0.0.0"
    s.start()
    try:
        nt.assert_error(infer(s, {}), 401, ["no API key"])
        key = create_key(s, "first")
        _, expected = nt.golden()
        nt.assert_infer_ok(infer(s, bearer(key)), expected)
    finally:
        s.stop_checked()
    # Turning it off is explicit, and logged as a warning.
    (tmp_path / "none").mkdir()
    t = nt.NusadServer("open-net-none", tmp_path / "none", None, {"auth": {"mode": "none"}})
    t.listen_host = "0.0.0.0"
    t.start()
    try:
        assert infer(t, {}).status == 200
        assert "WARN" in t.log_path.read_text() and "answers anyone" in t.log_path.read_text()
    finally:
        t.stop_checked()


def test_every_admin_action_is_audited_and_tampering_is_found(server):
    s = server
    create_key(s, "a")
    nusactl(s, "keys", "revoke", "a")
    nusactl(s, "models", "load", nt.MODEL)
    r = nusactl(s, "models", "pin", "nosuch", "--version", "1", check=False)
    assert r.returncode != 0
    records = json.loads(nusactl(s, "audit", "list", "--json").stdout)["records"]
    got = [(x["action"], x["target"], x["outcome"] == "ok") for x in records]
    assert got == [("key.create", "key a", True), ("key.revoke", "key a", True),
                   ("model.load", nt.MODEL, True), ("model.pin", "nosuch", False)], got
    assert all(x["actor"]["kind"] == "uid" for x in records), records
    assert json.loads(nusactl(s, "audit", "verify", "--json").stdout)["problems"] == []
    # A checkpoint, then tampering: an edit, and a truncation after it.
    cp = json.loads(nusactl(s, "audit", "checkpoint", "--json").stdout)["checkpoint"]
    assert cp["seq"] == 4
    log = s.data_dir / "audit" / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    edited = lines[1].replace('"key a"', '"key b"')
    assert edited != lines[1]
    log.write_text("".join([lines[0], edited, *lines[2:]]))
    r = nusactl(s, "audit", "verify", "--json", check=False)
    assert r.returncode != 0
    problems = json.loads(r.stdout)["problems"]
    assert [(p["kind"], p["seq"]) for p in problems] == [("edited", 2)], problems
    log.write_text("".join(lines[:2]))
    problems = json.loads(nusactl(s, "audit", "verify", "--json", check=False).stdout)["problems"]
    assert [p["kind"] for p in problems] == ["truncated"], problems
    # Whoever cuts the log may remove the box's own checkpoints too: the
    # operator's copy still finds it.
    (s.data_dir / "audit" / "checkpoints.jsonl").unlink()
    kept = s.workdir / "checkpoint.json"
    kept.write_text(json.dumps(cp) + "\n")
    r = nusactl(s, "audit", "verify", "--json", "--checkpoint", str(kept), check=False)
    assert r.returncode != 0
    assert [p["kind"] for p in json.loads(r.stdout)["problems"]] == ["truncated"], r.stdout
    # A forged checkpoint (another key, or a changed field) is refused.
    forged = dict(cp, hash="0" * 64)
    kept.write_text(json.dumps(forged) + "\n")
    r = nusactl(s, "audit", "verify", "--checkpoint", str(kept), check=False)
    assert r.returncode != 0 and "checkpoint of seq 4" in r.stderr, r.stderr
    # The journal (nusad's log) has the records too.
    assert "key.create" in s.log_path.read_text()
    # Another process's action (the OS updater) is recorded as its caller.
    r = nt.admin(s, "POST", "/v2/nusa/audit",
                 json.dumps({"action": "update.apply", "target": "release 1.1.0"}).encode())
    assert r.status == 200 and r.json()["actor"] == {"kind": "token", "id": "admin token"}, r
    r = nt.admin(s, "POST", "/v2/nusa/audit", b'{"action": "Not A Name", "target": "x"}')
    nt.assert_error(r, 400, ["action"])


def test_keys_provisioned_with_the_box_are_added_at_start(tmp_path):
    key = subprocess.run([str(nt.nusactl_binary()), "keys", "generate"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert key.startswith("nusa_") and len(key) == 57, key
    boot = tmp_path / "bootstrap-keys.toml"
    boot.write_text(f'[[keys]]\nname = "fleet-admin"\nrole = "admin"\nkey = "{key}"\n')
    boot.chmod(0o644)
    config = {"auth": {"mode": "keys", "bootstrap_keys": str(boot)}}
    (tmp_path / "s").mkdir()
    s = nt.NusadServer("boot", tmp_path / "s", None, config)
    # A file others may read is refused: it holds keys.
    with pytest.raises(nt.ServerStartError, match="chmod 600"):
        s.start(attempts=1)
    boot.chmod(0o600)
    s.start()
    try:
        _, expected = nt.golden()
        nt.assert_infer_ok(infer(s, bearer(key)), expected)
        r = nt.https1(s, "POST", "/v2/repository/index", headers=bearer(key))
        assert r.status == 200, r
        # Rotated over the network by its holder; a restart does not bring
        # the provisioned text back.
        r = nt.https1(s, "POST", "/v2/nusa/keys/fleet-admin/rotate", b"{}", bearer(key))
        assert r.status == 200, r
        new = r.json()["secret"]
        assert s.stop() == 0
        s.start()
        nt.assert_error(infer(s, bearer(key)), 401, ["not valid"])
        nt.assert_infer_ok(infer(s, bearer(new)), expected)
        records = json.loads(nusactl(s, "audit", "list", "--json").stdout)["records"]
        assert [(r["action"], r["actor"]["kind"], r["actor"]["id"]) for r in records] == \
            [("key.rotate", "key", "fleet-admin")], records
        assert_no_secret_anywhere(s, [key, new])
    finally:
        s.stop_checked()


def test_a_config_reload_applies_what_it_can_names_the_rest_and_is_audited(tmp_path):
    """`nusactl config reload` and SIGHUP read the config file again: new
    provisioned keys and budgets apply at once, a changed section read only
    at start is named, a bad file is refused with nothing changed, and every
    reload is in the audit log with its caller."""
    import signal

    def generate() -> str:
        return subprocess.run([str(nt.nusactl_binary()), "keys", "generate"], capture_output=True,
                              text=True, check=True).stdout.strip()

    first, second = generate(), generate()
    boot = tmp_path / "bootstrap-keys.toml"
    boot.write_text(f'[[keys]]\nname = "first"\nkey = "{first}"\n')
    boot.chmod(0o600)
    config = {"auth": {"mode": "keys", "bootstrap_keys": str(boot)},
              "pricing": {"egress_per_gb": 1.0}}
    (tmp_path / "s").mkdir()
    s = nt.NusadServer("reload", tmp_path / "s", None, config).start()
    try:
        _, expected = nt.golden()
        nt.assert_infer_ok(infer(s, bearer(first)), expected)
        nt.assert_error(infer(s, bearer(second)), 401, ["not valid"])

        def budgets() -> list[dict]:
            return json.loads(nusactl(s, "cost", "--json").stdout)["budgets"]

        assert budgets() == []
        # A second provisioned key, a budget, and a changed [cache].
        with boot.open("a") as f:
            f.write(f'[[keys]]\nname = "second"\nkey = "{second}"\n')
        s.config_path.write_text(nt.toml_dumps({
            **config,
            "budgets": {"keys": {"second": {"daily": 5.0, "action": "alert"}}},
            "cache": {"memory_bytes": 1 << 20}}))
        reply = json.loads(nusactl(s, "config", "reload", "--json").stdout)
        assert reply["applied"] == ["auth.bootstrap_keys", "budgets"], reply
        assert reply["restart_needed"] == ["cache"], reply
        assert reply["file"] == str(s.config_path)
        nt.assert_infer_ok(infer(s, bearer(second)), expected)
        [b] = budgets()
        assert (b["scope"], b["name"], b["daily"]) == ("key", "second", 5.0), b
        text = nusactl(s, "config", "reload").stdout
        assert "applied: nothing" in text and "restart nusad to apply): cache" in text, text

        # A file that does not parse, and one that changes the currency:
        # refused, nothing changes, the server keeps serving.
        good = s.config_path.read_text()
        s.config_path.write_text(good + "\n[spill\n")
        r = nusactl(s, "config", "reload", check=False)
        assert r.returncode != 0 and "not reloaded" in r.stderr and "nusad.toml" in r.stderr, r.stderr
        s.config_path.write_text(good.replace("[pricing]", '[pricing]\ncurrency = "EUR"'))
        r = nusactl(s, "config", "reload", check=False)
        assert r.returncode != 0 and "pricing.currency" in r.stderr and "restart" in r.stderr, r.stderr
        nt.assert_infer_ok(infer(s, bearer(second)), expected)
        assert len(budgets()) == 1

        # SIGHUP: the same reload, recorded as the signal's.
        s.config_path.write_text(good.replace("egress_per_gb = 1.0", "egress_per_gb = 2.0"))
        s.proc.send_signal(signal.SIGHUP)

        def reloads() -> list[dict]:
            records = json.loads(nusactl(s, "audit", "list", "--json").stdout)["records"]
            return [x for x in records if x["action"] == "config.reload"]

        deadline = time.monotonic() + 20
        while len(reloads()) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        got = reloads()
        assert [(x["actor"]["id"], x["outcome"] == "ok") for x in got] == [
            ("uid 0", True), ("uid 0", True), ("uid 0", False), ("uid 0", False),
            ("signal SIGHUP", True)], got
        assert got[0]["detail"] == {"applied": ["auth.bootstrap_keys", "budgets"],
                                    "restart_needed": ["cache"]}, got[0]
        assert got[4]["detail"]["applied"] == ["pricing"], got[4]
        assert all(x["target"] == str(s.config_path) for x in got), got
        assert s.proc.poll() is None, "nusad ended on SIGHUP"
        assert "configuration reloaded" in s.log_path.read_text()
        assert json.loads(nusactl(s, "audit", "verify", "--json").stdout)["problems"] == []
        assert_no_secret_anywhere(s, [first, second])
    finally:
        s.stop_checked()


def make_client_pki(d: Path) -> tuple[Path, Path, Path, Path, Path]:
    """A client CA and two client certificates, with openssl: one the CA
    signed, one self-signed with the same subject."""
    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    ca_key, ca = d / "ca.key", d / "ca.pem"
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=Test Client CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    ext = d / "client.ext"
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    key, csr, cert = d / "client.key", d / "client.csr", d / "client.pem"
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
         str(key), "-out", str(csr), "-subj", "/CN=camera-7/O=Acme")
    ossl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    rogue = d / "rogue.pem"
    ossl("req", "-x509", "-key", str(key), "-out", str(rogue), "-days", "2",
         "-subj", "/CN=camera-7/O=Acme")
    return ca, cert, key, rogue, ext


def test_a_client_certificate_authenticates_as_its_key(tmp_path):
    import http.client
    import ssl

    ca, cert, key, rogue, _ = make_client_pki(tmp_path)
    (tmp_path / "s").mkdir()
    s = nt.NusadServer("mtls", tmp_path / "s", None,
                       {"auth": {"mode": "keys", "client_ca": str(ca)}})
    s.start()
    try:
        nusactl(s, "keys", "create", "camera-7", "--cert-subject", "CN=camera-7, O=Acme")
        x, expected = nt.golden()
        body, headers = nt.binary_infer_request(x)

        def call(client_cert: Path | None) -> nt.Response:
            ctx = ssl.create_default_context(cafile=str(s.ca_path))
            if client_cert is not None:
                ctx.load_cert_chain(str(client_cert), str(key))
            conn = http.client.HTTPSConnection(s.host, s.port, timeout=30, context=ctx)
            try:
                conn.request("POST", nt.infer_path(), body=body, headers=headers)
                r = conn.getresponse()
                return nt.Response(r.status, nt.join_headers(r.getheaders()), r.read(), "1.1")
            finally:
                conn.close()

        nt.assert_infer_ok(call(cert), expected)
        nt.assert_error(call(None), 401, ["no API key"])
        # The same subject, not signed by the client CA: the handshake fails.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            call(rogue)
        # HTTP/3 (aioquic) presents the certificate in the QUIC handshake.
        def h3(client_cert: Path | None) -> nt.Response:
            pair = (str(client_cert), str(key)) if client_cert is not None else None
            return h3client.h3_requests(
                s, [h3client.H3Request("POST", nt.infer_path(), body, dict(headers))],
                timeout=30, client_cert=pair)[0]

        nt.assert_infer_ok(h3(cert), expected)
        nt.assert_error(h3(None), 401, ["no API key"])
        with pytest.raises(ConnectionError, match="invalid peer certificate"):
            h3(rogue)
        nusactl(s, "keys", "revoke", "camera-7")
        nt.assert_error(call(cert), 401, ["revoked"])
        nt.assert_error(h3(cert), 401, ["revoked"])
    finally:
        s.stop_checked()


def test_cost_figures_match_what_was_sent(tmp_path):
    """`nusactl cost` by key and by place: requests and bytes equal what the
    clients sent and received, money follows [pricing], and the totals equal
    the Prometheus counters."""
    (tmp_path / "s").mkdir()
    config = {"auth": {"mode": "keys"},
              "pricing": {"local_per_compute_second": 0.5, "egress_per_gb": 0.08}}
    models = tmp_path / "models"
    nt.make_model_repo(models, {nt.MODEL: ((1,), {"cache": {"enabled": True, "ttl_s": 3600}})})
    s = nt.NusadServer("cost", tmp_path / "s", models, config).start()
    try:
        a, b = create_key(s, "team-a"), create_key(s, "team-b")
        sent = {"team-a": [0, 0, 0], "team-b": [0, 0, 0]}  # requests, bytes in, bytes out
        for name, key, rows in (("team-a", a, [0, 1, 2, 0, 0]), ("team-b", b, [3, 4])):
            for row in rows:
                x, expected = nt.golden_rows([row])
                body, h = nt.binary_infer_request(x)
                r = nt.https1(s, "POST", nt.infer_path(), body, {**h, **bearer(key)})
                nt.assert_infer_ok(r, expected, binary=True)
                sent[name][0] += 1
                sent[name][1] += len(body)
                sent[name][2] += len(r.body)
        report = json.loads(nusactl(s, "cost", "--by", "key", "--json").stdout)
        got = {row["group"]: [row["requests"], row["bytes_in"], row["bytes_out"]]
               for row in report["rows"]}
        assert got == sent, (got, sent)
        t = report["totals"]
        assert t["requests"] == 7 and t["jurisdictions"] == {"local": 7}, t
        assert t["compute_s"] > 0
        egress = t["bytes_out"] / 2**30 * 0.08
        assert abs(t["cost"] - (t["compute_s"] * 0.5 + egress)) < 1e-9, t
        by_place = {r["group"]: r["requests"] for r in
                    json.loads(nusactl(s, "cost", "--by", "place", "--json").stdout)["rows"]}
        assert by_place == {"local": 5, "cache": 2}, by_place  # row 0 three times: two hits
        samples = nt.scrape_metrics(s)
        assert nt.metric_sum(samples, "nusa_cost_requests_total") == 7
        assert nt.metric_sum(samples, "nusa_cost_requests_total", key="team-a") == 5
        assert abs(nt.metric_sum(samples, "nusa_cost_money_total") - t["cost"]) < 1e-9
        text = nusactl(s, "cost", "--by", "key").stdout
        assert "team-a" in text and "TOTAL" in text, text
        # A wrong grouping is a clear error.
        r = nusactl(s, "cost", "--by", "colour", check=False)
        assert r.returncode != 0 and "colour" in r.stderr, r.stderr
    finally:
        s.stop_checked()

"""GET /api/agents/bootstrap: anonymous, public facts only, host from config or the
Host header, the loopback-only warning, rate limit, and the off switch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewayConfig
from shared.config import IngestConfig
from shared.security import fingerprint, generate_keypair, write_keypair


def _client(make_settings, ingest: IngestConfig | None = None, **gateway: object):
    settings = make_settings(**gateway)
    settings = dataclasses.replace(settings, ingest=ingest or IngestConfig())
    keys_dir = Path(settings.general.state_dir) / "keys"
    public, secret = write_keypair(keys_dir, "ingest")
    return TestClient(create_app(settings), base_url="http://testserver"), public, secret


def test_anonymous_answer_has_endpoints_and_public_key_only(make_settings) -> None:
    ingest = IngestConfig(bind_host="0.0.0.0", frame_port=6100, control_port=6101)
    c, public, secret = _client(make_settings, ingest)
    with c:
        resp = c.get("/api/agents/bootstrap", headers={"Host": "10.1.2.3:5002"})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["ingest"] == {
            "frame_endpoint": "tcp://10.1.2.3:6100",
            "control_endpoint": "tcp://10.1.2.3:6101",
            "security": "curve",
            "public_key": public,
            "fingerprint": fingerprint(public),
            "loopback_only": False,
            "warning": None,
        }
        assert set(body) == {"version", "protocol_version", "ingest"}
        assert secret not in resp.text
        # the rest of the agents API stays closed to anonymous callers
        assert c.get("/api/agents/keys").status_code == 401
        # an IPv6 Host header is kept in brackets
        v6 = c.get("/api/agents/bootstrap", headers={"Host": "[fd00::7]:5002"}).json()
        assert v6["ingest"]["frame_endpoint"] == "tcp://[fd00::7]:6100"
        assert c.get("/api/agents/bootstrap", headers={"Host": "a b"}).status_code == 400


def test_public_host_from_config_and_loopback_warning(make_settings, caplog) -> None:
    c, _, _ = _client(make_settings, public_ingest_host="cams.example.net")
    with c:
        ing = c.get("/api/agents/bootstrap", headers={"Host": "127.0.0.1:5002"}).json()["ingest"]
    assert ing["frame_endpoint"] == "tcp://cams.example.net:5555"
    assert ing["loopback_only"] is True
    assert "127.0.0.1 only" in ing["warning"] and "BIND_HOST" in ing["warning"]
    assert any("127.0.0.1 only" in r.getMessage() for r in caplog.records)
    # an agent on this machine is fine with a loopback-only ingest
    c, _, _ = _client(make_settings)
    with c:
        ing = c.get("/api/agents/bootstrap", headers={"Host": "localhost:5002"}).json()["ingest"]
    assert ing["loopback_only"] is True and ing["warning"] is None


def test_rate_limited_and_can_be_turned_off(make_settings) -> None:
    c, _, _ = _client(make_settings, bootstrap_per_minute=3)
    with c:
        codes = [c.get("/api/agents/bootstrap").status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
    c, _, _ = _client(make_settings, bootstrap_enabled=False)
    with c:
        assert c.get("/api/agents/bootstrap").status_code == 404


def test_missing_key_is_503_and_insecure_ingest_says_so(make_settings, tmp_path) -> None:
    settings = make_settings(ingest_public_key=str(tmp_path / "nowhere.public"))
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/agents/bootstrap").status_code == 503
    plain = dataclasses.replace(make_settings(), ingest=IngestConfig(insecure=True))
    with TestClient(create_app(plain)) as c:
        ing = c.get("/api/agents/bootstrap", headers={"Host": "localhost"}).json()["ingest"]
    assert ing["security"] == "insecure" and ing["public_key"] is None


def test_config_fields_are_bounded() -> None:
    GatewayConfig(public_ingest_host="10.0.0.2")
    for bad in ({"public_ingest_host": "a b"}, {"bootstrap_per_minute": 0}):
        try:
            GatewayConfig(**bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_what_ingest_published_wins_over_the_gateways_config(make_settings, r, keys) -> None:
    """Gateway and ingest on different hosts/configs (compose, k8s): the ports ingest really
    bound, its bind host and key come from Redis; gateway.ingest_public_key still wins."""
    from shared.ingest_info import publish_ingest_info

    c, file_key, _ = _client(make_settings)  # config: loopback, 5555/5556, key file
    published, _ = generate_keypair()
    publish_ingest_info(r, keys, bind_host="0.0.0.0", frame_port=7100, control_port=7101,
                        public_key=published)  # fmt: skip
    with c:
        ing = c.get("/api/agents/bootstrap", headers={"Host": "cams.lan"}).json()["ingest"]
    assert ing["frame_endpoint"] == "tcp://cams.lan:7100"
    assert ing["control_endpoint"] == "tcp://cams.lan:7101"
    assert ing["public_key"] == published != file_key
    assert ing["loopback_only"] is False and ing["warning"] is None
    explicit, _ = generate_keypair()
    c, _, _ = _client(make_settings, ingest_public_key=explicit)
    with c:
        assert c.get("/api/agents/bootstrap").json()["ingest"]["public_key"] == explicit
    # an insecure ingest publishes no key: the answer says insecure
    publish_ingest_info(r, keys, bind_host="0.0.0.0", frame_port=7100, control_port=7101,
                        public_key=None)  # fmt: skip
    c, _, _ = _client(make_settings)
    with c:
        ing = c.get("/api/agents/bootstrap").json()["ingest"]
    assert (ing["security"], ing["public_key"]) == ("insecure", None)

"""The Prometheus listener on general.metrics_port, and the offline API reference at /docs."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from shared.config import GeneralConfig


def test_metrics_port_serves_prometheus_without_credentials(settings, port_factory, tmp_path):
    port = port_factory()
    s = replace(settings, general=GeneralConfig(state_dir=str(tmp_path / "st"), metrics_port=port))
    with TestClient(create_app(s)) as c:
        c.get("/api/cameras")  # 401, counted
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert resp.status_code == 200
        assert 'sentri_gateway_http_requests_total{method="GET",route="/api/cameras"' in resp.text
        assert "sentri_gateway_auth_rejected_total" in resp.text
    # The listener goes away with the app (no port left bound after shutdown).
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_metrics_listener_is_off_by_default_and_binds_like_the_gateway(
    make_settings, port_factory, tmp_path
):
    from services.gateway.app import start_metrics_listener

    assert start_metrics_listener(make_settings()) is None  # metrics_port 0: no listener
    port = port_factory()
    general = GeneralConfig(state_dir=str(tmp_path), metrics_port=port)
    # Unset metrics_host = gateway.host: loopback by default, never all interfaces.
    srv = start_metrics_listener(replace(make_settings(), general=general))
    try:
        assert srv.server_address == ("127.0.0.1", port)
    finally:
        srv.shutdown()
        srv.server_close()
    srv = start_metrics_listener(replace(make_settings(metrics_host="127.0.0.2"), general=general))
    try:
        assert httpx.get(f"http://127.0.0.2:{port}/metrics", timeout=5).status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        srv.shutdown()
        srv.server_close()


def test_docs_page_is_self_contained(client):
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert "/static/js/docs.js" in html and "/openapi.json" in html
    assert "cdn" not in html.lower() and "https://" not in html
    # The page runs under the same strict CSP as the dashboard: nothing from elsewhere.
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "http" not in csp
    js = client.get("/static/js/docs.js").text
    assert "https://" not in js and 'fetch("/openapi.json"' in js


def test_metrics_port_in_use_fails_the_start_loudly(settings, port_factory, tmp_path, caplog):
    import socket

    port = port_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        s = replace(
            settings, general=GeneralConfig(state_dir=str(tmp_path / "st"), metrics_port=port)
        )
        with pytest.raises(OSError), TestClient(create_app(s)):
            pass
    assert any(r.getMessage() == "cannot serve metrics" for r in caplog.records)

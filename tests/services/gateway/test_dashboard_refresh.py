"""Headless Chromium: the dashboard refreshes from websocket notices, coalesced, and does
not poll (issue 12, item 11 and the pending-key flood)."""

from __future__ import annotations

import time

import pytest

from shared.security import AgentKeyStore, generate_keypair
from tests.helpers import wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD, add_client

pytestmark = pytest.mark.browser

QUIET_MS = 3500  # longer than the old 2.5 s polling period


def _open(browser, srv):
    page = browser.new_page(viewport={"width": 1360, "height": 800})
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url.replace(srv.url, "")))
    page.goto(srv.url + "/login")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(srv.url + "/", timeout=10_000)
    page.wait_for_selector("#conn-state.badge-online", timeout=10_000)
    return page, requests


def test_idle_dashboard_does_not_poll(browser, make_server, r, keys):
    srv = make_server()
    add_client(r, keys, "lab", ("front",))
    page, requests = _open(browser, srv)
    try:
        page.wait_for_selector('.tile[data-camera="lab/front"]', timeout=10_000)
        # The start-up loads (and one refresh on connect) settle: no request for 1.5 s.
        settled_by = time.monotonic() + 15
        seen = -1
        while seen != len(requests):
            assert time.monotonic() < settled_by, f"requests never settle: {requests[-5:]}"
            seen = len(requests)
            page.wait_for_timeout(1500)
        before = len(requests)
        page.wait_for_timeout(QUIET_MS)  # nothing happens in the system meanwhile
        polled = [u for u in requests[before:] if u.startswith("/api/")]
        assert polled == [], polled
        # A registry change is picked up through the websocket.
        add_client(r, keys, "gate", ("door",))
        page.wait_for_selector('.tile[data-camera="gate/door"]', timeout=10_000)
    finally:
        page.close()


def test_bursts_of_notices_cost_one_refresh_each(browser, make_server, r, keys):
    srv = make_server()
    page, requests = _open(browser, srv)
    try:
        page.wait_for_timeout(1500)
        before = len(requests)
        store = AgentKeyStore(r, keys)
        for _ in range(40):  # a pending-key flood: 40 notices within milliseconds
            store.note_pending(generate_keypair()[0])
        for i in range(30):  # 30 agents registering at once
            add_client(r, keys, f"c{i:02d}", ("cam",))
        wait_for(lambda: page.inner_text("#agents-pending") == "40", 15, 0.1, "40 pending keys")
        wait_for(lambda: page.locator(".tile").count() == 30, 15, 0.1, "30 tiles")
        page.wait_for_timeout(2500)  # any trailing refresh of the burst
        after = requests[before:]
        key_loads = [u for u in after if u.startswith("/api/agents/keys")]
        camera_loads = [u for u in after if u == "/api/cameras"]
        print(f"40 key notices -> {len(key_loads)} loads; 30 registrations -> {len(camera_loads)}")
        assert 1 <= len(key_loads) <= 3, key_loads
        assert 1 <= len(camera_loads) <= 4, camera_loads
        assert "40 new agent keys" in page.inner_text("#toast") or len(key_loads) > 1
    finally:
        page.close()

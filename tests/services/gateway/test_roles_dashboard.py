"""Headless Chromium: a scoped viewer sees only its tiles and no admin pages; an admin
manages accounts and reads the audit trail in the dashboard."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.helpers import encode_jpeg, wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD, add_client

pytestmark = pytest.mark.browser

PW = "viewer-password-123"
CAMERAS = ("demo/demo-bus", "demo/demo-car", "other/cam")


def _login(page, srv, user: str, password: str) -> None:
    page.goto(srv.url + "/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-button")
    page.wait_for_url(srv.url + "/", timeout=10_000)


def test_viewer_sees_only_its_tiles_and_no_admin_pages(
    browser, make_server, r, keys, publisher, artifacts_dir
):
    srv = make_server()
    add_client(r, keys, "demo", ("demo-bus", "demo-car"))
    add_client(r, keys, "other", ("cam",))
    admin = srv.login()
    body = {"username": "guard", "password": PW, "role": "viewer", "cameras": ["demo/demo-bus"]}
    assert admin.post("/api/users", json=body).status_code == 201
    jpeg = encode_jpeg(np.full((120, 160, 3), 128, np.uint8))
    stop = threading.Event()

    def frames() -> None:
        while not stop.wait(0.1):
            for cam in CAMERAS:
                publisher.publish(cam, jpeg=jpeg)

    t = threading.Thread(target=frames, daemon=True)
    t.start()
    page = browser.new_page(viewport={"width": 1360, "height": 800})
    try:
        _login(page, srv, "guard", PW)
        page.wait_for_selector('.tile[data-camera="demo/demo-bus"]', timeout=10_000)
        wait_for(
            lambda: int(page.get_attribute('.tile[data-camera="demo/demo-bus"]', "data-frames") or 0) > 2,
            15, 0.2, "frames on the viewer's tile",
        )  # fmt: skip
        tiles = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.camera)")
        assert tiles == ["demo/demo-bus"]
        wait_for(lambda: page.get_attribute("body", "data-role") == "viewer", 10, 0.1, "role")
        for tab in ("agents", "accounts", "audit"):
            assert not page.is_visible(f'.tab[data-view="{tab}"]'), tab
        visible_tabs = page.eval_on_selector_all(
            ".tab", "ts => ts.filter(t => !t.hidden).map(t => t.dataset.view)"
        )
        assert "accounts" not in visible_tabs and "audit" not in visible_tabs
        # Read only: the tile's stream and processing controls are not offered.
        assert not page.is_visible('.tile[data-camera="demo/demo-bus"] .stream-toggle')
        page.click('.tab[data-view="events"]')
        options = page.eval_on_selector_all("#ev-camera option", "os => os.map(o => o.value)")
        assert options == ["", "demo/demo-bus"]
        page.click('.tab[data-view="live"]')
        page.screenshot(path=str(artifacts_dir / "gateway-viewer-dashboard.png"))
        # The pages the browser cannot show are refused by the server too.
        assert page.request.get(srv.url + "/api/users").status == 403
        assert page.request.get(srv.url + "/api/cameras/other/cam/snapshot.jpg").status == 404
    finally:
        stop.set()
        t.join(5)
        page.close()
        admin.close()


def test_admin_manages_accounts_and_reads_the_audit_trail(browser, make_server, artifacts_dir):
    srv = make_server()
    page = browser.new_page(viewport={"width": 1360, "height": 800})
    page.on("dialog", lambda d: d.accept())
    try:
        _login(page, srv, ADMIN, PASSWORD)
        page.wait_for_selector('.tab[data-view="accounts"]:not([hidden])', timeout=10_000)
        page.click('.tab[data-view="accounts"]')
        page.wait_for_selector(f'#users tr[data-user="{ADMIN}"]', timeout=10_000)
        page.fill("#user-name", "shopkeeper")
        page.fill("#user-password", "short")
        page.select_option("#user-role", "operator")
        page.fill("#user-cameras", "shop, lab/cam*")
        page.fill("#user-password", "a-long-enough-password")
        page.click('#user-form button[type="submit"]')
        page.wait_for_selector('#users tr[data-user="shopkeeper"]', timeout=10_000)
        row = page.inner_text('#users tr[data-user="shopkeeper"]')
        assert "lab/cam*, shop" in row
        # Demote to viewer, then disable.
        page.select_option('#users tr[data-user="shopkeeper"] select.user-role', "viewer")
        wait_for(
            lambda: srv.login().get("/api/users/shopkeeper").json()["role"] == "viewer",
            10, 0.2, "role changed",
        )  # fmt: skip
        page.click('#users tr[data-user="shopkeeper"] button.toggle-disabled')
        page.wait_for_selector(
            '#users tr[data-user="shopkeeper"] button.toggle-disabled:text("Enable")',
            timeout=10_000,
        )
        page.screenshot(path=str(artifacts_dir / "gateway-accounts.png"))

        page.click('.tab[data-view="audit"]')
        page.wait_for_selector('#audit tr[data-action="user_created"]', timeout=10_000)
        actions = page.eval_on_selector_all("#audit tr", "rs => rs.map(r => r.dataset.action)")
        users = [a for a in actions if a.startswith("user_")]
        assert users == ["user_updated", "user_updated", "user_created"]
        assert "login" in actions
        assert "127.0.0.1" in page.inner_text('#audit tr[data-action="login"]')
        page.screenshot(path=str(artifacts_dir / "gateway-audit.png"))
    finally:
        page.close()

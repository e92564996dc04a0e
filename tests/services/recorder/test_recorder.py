"""The recorder on demo frames: real H.264 segments, modes, pre/post-roll, ENOSPC."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from services.recorder.config import RecorderConfig
from services.recorder.processor import RecorderProcessor, wait_idle
from shared.eventstore import EventStore
from shared.storage import FsMediaStore
from tests.services.recorder.conftest import frames, probe

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _recorder(tmp_path, **cfg):
    media = FsMediaStore(tmp_path / "media")
    url = f"sqlite:///{tmp_path / 'events.db'}"
    proc = RecorderProcessor(RecorderConfig(**cfg), media, lambda: EventStore(url))
    proc.uploader.start()
    return proc, media, EventStore(url)


def test_continuous_segments_are_h264_of_the_expected_length(tmp_path, demo_jpegs):
    proc, media, store = _recorder(tmp_path, mode="continuous", segment_s=10)
    for ts, jpeg in frames(demo_jpegs, T0, 25):
        proc.feed("lab/cam0", ts, jpeg)
    proc.flush()
    assert wait_idle(proc)
    segs = store.segments("lab/cam0", T0 - 1, T0 + 60_000)
    assert len(segs) == 3
    durations = []
    for s in segs:
        info = probe(media.get(s["key"]))
        assert info["codec"] == "h264" and info["first_key"] and info["size"] == (640, 480)
        assert info["frames"] == s["frames"]
        assert abs(info["duration"] - (s["end"] - s["start"]) / 1000) < 0.2
        durations.append(info["duration"])
    assert abs(durations[0] - 10) <= 1 and abs(durations[1] - 10) <= 1
    assert abs(sum(durations) - 25) <= 1
    # Contiguous: each segment starts where the previous one ended (one frame apart).
    for a, b in zip(segs, segs[1:], strict=False):
        assert abs(b["start"] - a["end"]) <= 70
    assert all(s["mode"] == "continuous" and not s["event"] for s in segs)
    proc.uploader.stop()


def test_events_mode_covers_pre_and_post_roll_only(tmp_path, demo_jpegs):
    proc, media, store = _recorder(tmp_path, mode="events", pre_roll_s=3, post_roll_s=4)
    first_seen, entered, last_seen, left = T0 + 10_000, T0 + 10_500, T0 + 14_000, T0 + 16_000
    ev = {"camera_id": "c/1", "track_id": 1, "first_seen": first_seen}
    pending = [(entered, {**ev, "type": "object_entered", "ts": entered}),
               (left, {**ev, "type": "object_left", "ts": left, "last_seen": last_seen})]  # fmt: skip
    for ts, jpeg in frames(demo_jpegs, T0, 30):
        while pending and pending[0][0] <= ts:
            proc.triggers.apply(pending.pop(0)[1])
        proc.feed("c/1", ts, jpeg)
    proc.flush()
    assert wait_idle(proc)
    segs = store.segments("c/1", T0 - 1, T0 + 60_000)
    assert segs and all(s["event"] and s["mode"] == "events" for s in segs)
    start, end = segs[0]["start"], segs[-1]["end"]
    # Covers first_seen - pre_roll .. last_seen + post_roll (within a frame), no more.
    assert first_seen - 3000 - 70 <= start <= first_seen - 3000 + 70
    assert last_seen + 4000 <= end <= last_seen + 4000 + 140
    total = sum(probe(media.get(s["key"]))["duration"] for s in segs)
    assert abs(total - (end - start) / 1000) <= 1
    proc.uploader.stop()


def test_off_mode_records_nothing(tmp_path, demo_jpegs):
    proc, media, store = _recorder(tmp_path, mode="continuous", cameras={"x/off": {"mode": "off"}})
    for ts, jpeg in frames(demo_jpegs, T0, 3):
        proc.feed("x/off", ts, jpeg)
    proc.flush()
    assert wait_idle(proc)
    assert store.segments("x/off", 0, 10**14) == [] and list(media.list()) == []
    proc.uploader.stop()


def test_gap_recorded_between_continuous_segments(tmp_path, demo_jpegs):
    proc, media, store = _recorder(tmp_path, mode="continuous", segment_s=4, gap_s=2)
    for ts, jpeg in frames(demo_jpegs, T0, 4.5):
        proc.feed("g/1", ts, jpeg)
    for ts, jpeg in frames(demo_jpegs, T0 + 20_000, 4.5):  # camera silent for ~15 s
        proc.feed("g/1", ts, jpeg)
    proc.flush()
    assert wait_idle(proc)
    gaps = store.gaps("g/1", 0, 10**14)
    assert len(gaps) == 1 and gaps[0]["reason"] == "no_frames"
    assert T0 + 4_400 <= gaps[0]["start"] <= T0 + 4_700 and gaps[0]["end"] == T0 + 20_000
    proc.uploader.stop()


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                         capture_output=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_enospc_drops_counts_and_resumes(small_fs: Path, tmp_path, demo_jpegs):
    media = FsMediaStore(small_fs / "media")
    url = f"sqlite:///{tmp_path / 'events.db'}"
    proc = RecorderProcessor(RecorderConfig(mode="continuous", segment_s=2), media,
                             lambda: EventStore(url))  # fmt: skip
    proc.uploader.start()
    filler = small_fs / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:  # leave ~no room
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    t = T0
    for ts, jpeg in frames(demo_jpegs, t, 8):
        proc.feed("full/1", ts, jpeg)
    assert wait_idle(proc)
    assert proc.uploader.dropped >= 2 and proc.uploader.stored == 0
    filler.unlink()  # space comes back
    for ts, jpeg in frames(demo_jpegs, t + 8_000, 5):
        proc.feed("full/1", ts, jpeg)
    proc.flush()
    assert wait_idle(proc)
    assert proc.uploader.stored >= 2
    store = EventStore(url)
    assert len(store.segments("full/1", 0, 10**14)) == proc.uploader.stored
    assert any(g["reason"] == "dropped_no_space" for g in store.gaps("full/1", 0, 10**14))
    assert not list(Path(small_fs / "media").rglob(".tmp-*"))  # no half-written files left
    proc.uploader.stop()


def test_camera_moving_between_replicas_leaves_a_recorded_gap(tmp_path, demo_jpegs):
    media = FsMediaStore(tmp_path / "media")
    url = f"sqlite:///{tmp_path / 'events.db'}"
    cfg = RecorderConfig(mode="continuous", segment_s=4, gap_s=2)
    first = RecorderProcessor(cfg, media, lambda: EventStore(url))
    first.uploader.start()
    for ts, jpeg in frames(demo_jpegs, T0, 4.5):
        first.feed("h/1", ts, jpeg)
    first.on_cameras_changed(frozenset())  # the camera moves away: its segment is stored
    assert wait_idle(first)
    first.uploader.stop()
    second = RecorderProcessor(cfg, media, lambda: EventStore(url))  # another replica
    second.uploader.start()
    for ts, jpeg in frames(demo_jpegs, T0 + 12_000, 4.5):
        second.feed("h/1", ts, jpeg)
    second.flush()
    assert wait_idle(second)
    second.uploader.stop()
    store = EventStore(url)
    segs = store.segments("h/1", 0, 10**14)
    assert len(segs) == 4  # 4 s + 0.5 s per replica: nothing of the first one was lost
    gaps = store.gaps("h/1", 0, 10**14)
    assert len(gaps) == 1 and gaps[0]["reason"] == "handover_or_restart"
    assert gaps[0]["start"] == segs[1]["end"] and gaps[0]["end"] == T0 + 12_000


def test_recording_off_written_bare_in_yaml_or_env_is_off(tmp_path):
    """YAML reads a bare ``off`` as a boolean; the docs' ``mode: off`` must still work
    (the compose recorder exited 2 on SENTRI_RECORDER__MODE=off)."""
    from services.recorder.config import RecorderConfig
    from shared.config import load_section

    cfg_file = tmp_path / "sentri.yaml"
    cfg_file.write_text("recorder:\n  mode: off\n  cameras:\n    lab/cam0: {mode: off}\n")
    from_file = load_section(RecorderConfig, "recorder", config_file=cfg_file, env={})
    assert from_file.mode == "off" and from_file.cameras["lab/cam0"].mode == "off"
    from_env = load_section(RecorderConfig, "recorder", env={"SENTRI_RECORDER__MODE": "off"})
    assert from_env.mode == "off"

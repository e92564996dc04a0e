"""Worker runtime: sharding, latest-frame buffering, subscriptions following ownership."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import WorkerConfig
from shared.protocol import FrameHeader
from shared.registry import register_client
from shared.worker import (
    Frame,
    LatestFrameBuffer,
    Processor,
    WorkerRuntime,
    rendezvous_owner,
    set_processing,
    shard_cameras,
)
from tests.helpers import FramePublisher, wait_for

CAMS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=60, unique=True)
MEMBERS = st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=8, unique=True)


@settings(max_examples=150)
@given(cameras=CAMS, members=MEMBERS, dead_index=st.integers(0, 7))
def test_every_camera_has_one_owner_and_only_dead_members_cameras_move(
    cameras, members, dead_index
) -> None:
    owners = {c: rendezvous_owner(c, members) for c in cameras}
    shards = [shard_cameras(cameras, members, m) for m in members]
    assert sum(len(s) for s in shards) == len(cameras)  # exactly one owner each
    assert set().union(*shards) == set(cameras)
    dead = members[dead_index % len(members)]
    alive = [m for m in members if m != dead]
    for c in cameras:
        after = rendezvous_owner(c, alive)
        if owners[c] != dead:
            assert after == owners[c]  # survivors keep their cameras
        else:
            assert after in alive


def test_sharding_spreads_load() -> None:
    cams = [f"client{i % 5}/cam{i}" for i in range(400)]
    members = ["a", "b", "c", "d"]
    sizes = [len(shard_cameras(cams, members, m)) for m in members]
    assert min(sizes) > 60, sizes  # no replica starves (400/4 = 100 expected)


def _frame(cam: str, seq: int, rx: int | None = None, ts: int | None = None) -> Frame:
    h = FrameHeader(
        client_id=cam.split("/")[0], camera_id=cam, seq=seq, ts=ts or time.time_ns(), w=4, h=4,
        rx=rx,
    )  # fmt: skip
    return Frame(h, b"")


def test_latest_frame_buffer_keeps_newest_and_round_robins() -> None:
    buf = LatestFrameBuffer()
    assert buf.put(_frame("c/a", 1, 10)) is None
    replaced = buf.put(_frame("c/a", 2, 20))
    assert replaced is not None and replaced.header.seq == 1  # the stale one is reported
    assert buf.put(_frame("c/a", 0, 5)).header.seq == 0  # ingest saw it earlier: skipped
    for cam in ("c/b", "c/c"):
        buf.put(_frame(cam, 1))
    first = buf.take(2, timeout=0)
    assert [f.camera_id for f in first] == ["c/a", "c/b"]
    assert first[0].header.seq == 2
    for cam in ("c/a", "c/b"):
        buf.put(_frame(cam, 3))
    assert [f.camera_id for f in buf.take(2, timeout=0)] == ["c/c", "c/a"]  # fairness: c/c first
    assert len(buf) == 1
    t0 = time.monotonic()
    buf.take(1, timeout=0)
    assert buf.take(1, timeout=0.05) == [] and time.monotonic() - t0 < 2


def test_an_agent_clock_cannot_pin_an_old_frame_or_steer_times() -> None:
    """Agent timestamps are never compared: a frame stamped one hour ahead by a
    fast agent clock is replaced by the next frame, and ``ts`` of records comes
    from ingest's ``rx`` (or the worker's receive time), not from the agent."""
    hour = 3600 * 10**9
    buf = LatestFrameBuffer()
    buf.put(_frame("c/a", 1, ts=time.time_ns() + hour))  # the agent's clock jumped ahead
    replaced = buf.put(_frame("c/a", 2, ts=time.time_ns()))  # ...and was corrected
    assert replaced is not None and replaced.header.seq == 1
    assert [f.header.seq for f in buf.take(1, timeout=0)] == [2]

    fast = _frame("c/a", 3, ts=time.time_ns() + hour)
    assert abs(fast.rx_time - time.time()) < 5 and abs(fast.ts_ms / 1000 - time.time()) < 5
    assert fast.capture_ts_ms // 1000 - int(time.time()) >= 3590  # kept for display only
    stamped = _frame("c/a", 4, rx=1_700_000_000 * 10**9, ts=time.time_ns() + hour)
    assert stamped.rx_time == 1_700_000_000 and stamped.ts_ms == 1_700_000_000_000


class RecordingProcessor(Processor):
    service = "testsvc"
    max_batch = 4

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: dict[str, list[int]] = {}
        self.lock = threading.Lock()

    def process_batch(self, frames: list[Frame]) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            for f in frames:
                assert f.image() is not None
                self.seen.setdefault(f.camera_id, []).append(f.header.seq)


@pytest.fixture
def publisher(port_factory):
    ctx = zmq.Context.instance()
    pub = FramePublisher(ctx, port_factory())
    yield pub
    pub.close()


def _runtime(redis_config, publisher, name: str, proc: Processor) -> WorkerRuntime:
    cfg = WorkerConfig(
        ingest_pub=publisher.endpoint, replica_id=name, heartbeat_s=0.2, member_ttl_s=3.0
    )
    return WorkerRuntime(proc, redis_config=redis_config, worker_config=cfg).start()


def _feed(
    publisher: FramePublisher, cams: list[str], stop: threading.Event, fps: float = 20
) -> threading.Thread:
    img = np.full((48, 64, 3), 128, np.uint8)

    def loop() -> None:
        while not stop.is_set():
            for c in cams:
                publisher.publish(c, img)
            time.sleep(1 / fps)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def test_two_replicas_split_cameras_and_take_over(redis_config, keys, r, publisher) -> None:
    cams = [f"edge/cam{i}" for i in range(6)]
    register_client(r, keys, {"client_id": "edge"}, [{"name": c.split("/")[1]} for c in cams])
    p1, p2 = RecordingProcessor(), RecordingProcessor()
    w1 = _runtime(redis_config, publisher, "w1", p1)
    w2 = _runtime(redis_config, publisher, "w2", p2)
    stop = threading.Event()
    _feed(publisher, cams, stop)
    try:
        wait_for(
            lambda: w1.owned | w2.owned == set(cams) and not (w1.owned & w2.owned), 10, what="split"
        )
        # Before w2 joined, w1 owned everything: frames published from the split on are
        # processed by their camera's owner only (frames w1 had buffered or in flight
        # when it gave cameras up may still finish there).
        split_seq = dict(publisher.seq)

        def after_split(p: RecordingProcessor) -> set[str]:
            with p.lock:
                return {c for c, seqs in p.seen.items() if max(seqs) > split_seq.get(c, 0)}

        wait_for(
            lambda: after_split(p1) | after_split(p2) == set(cams), 10, what="all cameras processed"
        )
        assert after_split(p1) <= w1.owned and after_split(p2) <= w2.owned
        for seqs in list(p1.seen.values()) + list(p2.seen.values()):
            assert seqs == sorted(seqs)
        w2_cams = set(w2.owned)
        w2.stop()
        p1.seen.clear()
        wait_for(lambda: w2_cams <= set(p1.seen), 10, what="takeover of the dead replica's cameras")
    finally:
        stop.set()
        w1.stop()
        if not w2.stop_event.is_set():
            w2.stop()


def test_processing_switch_and_skip_counting(redis_config, keys, r, publisher) -> None:
    cams = ["edge/a", "edge/b"]
    register_client(r, keys, {"client_id": "edge"}, [{"name": "a"}, {"name": "b"}])
    proc = RecordingProcessor(delay=0.2)  # slower than the 20 fps feed: must skip, not queue
    w = _runtime(redis_config, publisher, "solo", proc)
    stop = threading.Event()
    _feed(publisher, cams, stop)
    try:
        wait_for(lambda: set(proc.seen) == set(cams), 10, what="both cameras")
        set_processing(r, keys, "testsvc", "edge/b", False)
        wait_for(lambda: w.owned == {"edge/a"}, 5, what="camera b switched off")
        n_b = len(proc.seen["edge/b"])
        time.sleep(0.6)
        assert len(proc.seen["edge/b"]) <= n_b + 1  # at most one in-flight batch
        wait_for(lambda: w.stats["edge/a"].skipped > 5, 10, what="skipped frames counted")

        def written() -> dict | None:
            raw = r.hget(keys.worker_stats("testsvc"), "edge/a")
            st = json.loads(raw) if raw else None
            return st if st and st["skipped"] > 5 else None

        st = wait_for(written, 5, what="skipped frames in worker_stats")
        # Every received frame is processed, skipped, or still waiting (one in the
        # buffer, one in flight): the skipped VALUE is right, not just present.
        assert 0 <= st["received"] - st["processed"] - st["skipped"] <= 2, st
        assert st["skipped"] >= st["processed"], st  # 20 fps offered, < 5 fps processed
        set_processing(r, keys, "testsvc", "edge/b", True)
        wait_for(lambda: len(proc.seen["edge/b"]) > n_b + 2, 10, what="camera b back on")
    finally:
        stop.set()
        w.stop()


BOMB_SCRIPT = r"""
import json, resource, sys
from pathlib import Path
from shared.protocol import FrameHeader
from shared.worker import Frame

jpeg = Path(sys.argv[1]).read_bytes()
side = int(sys.argv[2])
seen = []
header = FrameHeader(client_id="c", camera_id="c/cam", seq=1, ts=1, w=side, h=side)
frame = Frame(header, jpeg, on_invalid=lambda reason, detail: seen.append(reason))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = [frame.image() is None for _ in range(3)]
grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"refused": results, "seen": seen, "grew_mb": grew_mb}))
"""


def test_a_decompression_bomb_is_refused_once_and_never_decoded(tmp_path) -> None:
    """A real 7000x7000 JPEG (small file, 147 MB decoded) above the default cap of
    7680x4320 pixels: refused by ``Frame.image()`` from its SOF, reported once, and
    the process's peak memory grows by less than 30 MB (decoding would add ~147 MB).
    Measured in a fresh process so other tests' peaks do not hide it."""
    import json
    import subprocess
    import sys

    import cv2

    side = 7000
    ok, buf = cv2.imencode(".jpg", np.zeros((side, side, 3), np.uint8))
    assert ok
    path = tmp_path / "bomb.jpg"
    path.write_bytes(buf.tobytes())
    assert path.stat().st_size < 2_000_000
    proc = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(path), str(side)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["refused"] == [True, True, True]
    assert out["seen"] == ["frame_too_large"], "reported once, as too large"
    assert out["grew_mb"] < 30, f"peak memory grew {out['grew_mb']:.0f} MB: the bomb was decoded"


def test_frame_image_checks_the_header_and_releases_pixels() -> None:
    import cv2

    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes()
    seen: list[str] = []

    def frame(w: int, h: int, **kw) -> Frame:
        header = FrameHeader(client_id="c", camera_id="c/cam", seq=1, ts=1, w=w, h=h)
        return Frame(header, jpeg, on_invalid=lambda r, d: seen.append(r), **kw)

    good = frame(64, 48)
    assert good.image().shape == (48, 64, 3) and good.invalid is None
    good.release()
    assert good._image is None and good.image() is not None
    assert frame(640, 480).image() is None and seen == ["bad_jpeg"]  # header lies
    assert frame(64, 48, max_pixels=64 * 47).image() is None and seen[-1] == "frame_too_large"


def test_member_ttl_is_honoured_by_the_redis_clock_not_the_replicas(r, keys, monkeypatch):
    """``live()`` keeps only members seen within the TTL, measured by Redis' clock; a
    replica whose own clock is 60 s fast neither drops its peers nor looks different."""
    from shared.worker import Membership, live_members, redis_now

    m = Membership(r, keys, "svc", "a", ttl=2.0)
    m.heartbeat()
    now = redis_now(r)
    r.zadd(keys.members("svc"), {"dead": now - 5, "alive": now - 1})
    assert m.live() == ["a", "alive"] == live_members(r, keys, "svc", 2.0)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 60)  # this replica's clock is off
    assert m.heartbeat() == ["a", "alive"]
    assert m.live() == ["a", "alive"]
    assert r.zscore(keys.members("svc"), "alive") is not None, "a peer was deleted"
    assert abs(r.zscore(keys.members("svc"), "a") - redis_now(r)) < 5


def test_heartbeat_must_be_shorter_than_member_ttl():
    from shared.config import ConfigError, load_section

    with pytest.raises(ConfigError, match="heartbeat_s .* must be below member_ttl_s"):
        load_section(
            WorkerConfig, "worker", env={"SENTRI_WORKER__HEARTBEAT_S": "5"}, config_file=None
        )

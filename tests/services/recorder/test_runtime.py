"""The recorder on the shared worker runtime: real Redis, real ZeroMQ fan-out."""

from __future__ import annotations

import threading
import time

import zmq

from services.recorder.config import RecorderConfig
from services.recorder.processor import RecorderProcessor
from shared.config import WorkerConfig
from shared.eventstore import EventStore
from shared.redisutil import publish_record
from shared.registry import register_client
from shared.storage import FsMediaStore
from shared.worker import WorkerRuntime
from tests.helpers import FramePublisher, wait_for
from tests.services.recorder.conftest import probe


def test_event_on_the_stream_triggers_a_clip(redis_config, keys, r, port_factory, tmp_path,
                                              demo_jpegs):  # fmt: skip
    cam = "edge/cam0"
    register_client(r, keys, {"client_id": "edge"}, [{"name": "cam0"}])
    pub = FramePublisher(zmq.Context.instance(), port_factory())
    media = FsMediaStore(tmp_path / "media")
    url = f"sqlite:///{tmp_path / 'e.db'}"
    proc = RecorderProcessor(RecorderConfig(mode="events", pre_roll_s=1, post_roll_s=1,
                                            segment_s=2), media, lambda: EventStore(url))  # fmt: skip
    wcfg = WorkerConfig(ingest_pub=pub.endpoint, replica_id="rec1", heartbeat_s=0.2,
                        member_ttl_s=1.0)  # fmt: skip
    runtime = WorkerRuntime(proc, redis_config=redis_config, worker_config=wcfg).start()
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            pub.publish(cam, jpeg=demo_jpegs[i % len(demo_jpegs)])
            i += 1
            time.sleep(1 / 15)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    try:
        wait_for(lambda: runtime.owned == {cam} and proc.follower.ready.is_set(), 10)
        wait_for(lambda: runtime.stats.get(cam) and runtime.stats[cam].processed > 20, 15)
        assert list(media.list()) == []  # events mode: nothing without an event
        now = time.time_ns() // 1_000_000
        publish_record(r, keys, "events", {"type": "object_entered", "event_id": "e1",
                       "camera_id": cam, "track_id": 3, "first_seen": now - 200, "ts": now},
                       maxlen=100)  # fmt: skip
        time.sleep(0)  # the follower picks it up; frames keep flowing
        wait_for(lambda: proc.uploader.stored >= 1, 20, what="a stored segment")
        publish_record(r, keys, "events", {"type": "object_left", "event_id": "e2",
                       "camera_id": cam, "track_id": 3, "first_seen": now - 200,
                       "ts": now + 2000, "last_seen": now + 1500}, maxlen=100)  # fmt: skip
        store = EventStore(url)
        seg = wait_for(lambda: store.segments(cam, 0, 10**14), 20, what="indexed")[0]
        info = probe(media.get(seg["key"]))
        assert info["codec"] == "h264" and info["frames"] >= 2 and info["first_key"]
    finally:
        stop.set()
        t.join(5)
        runtime.stop()
        pub.close()

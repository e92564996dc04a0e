"""`python -m services.recorder` and `python -m services.archiver` as real processes:
frames in, an event on the stream, a segment in the media store, rows in the database."""

from __future__ import annotations

import threading
import time

import zmq

from shared.eventstore import EventStore
from shared.redisutil import publish_record
from shared.registry import register_client
from shared.storage import FsMediaStore
from tests.faults.procs import Proc, service_env
from tests.helpers import FramePublisher, wait_for


def test_recorder_and_archiver_processes(redis_url, r, keys, prefix, port_factory, tmp_path,
                                         demo_jpegs):  # fmt: skip
    cam = "edge/cam0"
    register_client(r, keys, {"client_id": "edge"}, [{"name": "cam0"}])
    pub = FramePublisher(zmq.Context.instance(), port_factory())
    state = tmp_path / "state"
    env = service_env(redis_url, prefix, state, SENTRI_WORKER__INGEST_PUB=pub.endpoint,
                      SENTRI_RECORDER__PRE_ROLL_S="1", SENTRI_RECORDER__POST_ROLL_S="1",
                      SENTRI_RECORDER__SEGMENT_S="2", SENTRI_WORKER__HEARTBEAT_S="0.2")  # fmt: skip
    recorder = Proc("recorder", ["-m", "services.recorder"], env, tmp_path).start()
    archiver = Proc("archiver", ["-m", "services.archiver"], env, tmp_path).start()
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            pub.publish(cam, jpeg=demo_jpegs[i % len(demo_jpegs)])
            i += 1
            time.sleep(1 / 15)

    t = threading.Thread(target=feed, daemon=True)
    try:
        recorder.wait_log("recorder ready", 60)
        archiver.wait_log("archiver ready", 60)
        t.start()
        wait_for(lambda: r.hget(keys.worker_stats("recorder"), cam), 20, what="recorder owns cam")
        now = time.time_ns() // 1_000_000
        ev = {"camera_id": cam, "track_id": 1, "first_seen": now, "class": "person"}
        publish_record(r, keys, "events", {**ev, "type": "object_entered", "event_id": "in1",
                                           "ts": now + 100}, maxlen=100)  # fmt: skip
        time.sleep(0)
        wait_for(lambda: list(FsMediaStore(state / "media").list("recordings/")), 30,
                 what="a segment in the media store")  # fmt: skip
        publish_record(r, keys, "events", {**ev, "type": "object_left", "event_id": "out1",
                       "ts": now + 3000, "last_seen": now + 2500}, maxlen=100)  # fmt: skip
        store = EventStore(f"sqlite:///{state / 'events.db'}")
        wait_for(lambda: store.count_events() == 2 and store.segments(cam, 0, 10**14), 30,
                 what="events archived and segments indexed")  # fmt: skip
        obj = store.get_event("in1")["object"]
        assert (
            obj["end"] == now + 2500
            and store.get_event("out1")["object"]["object_id"] == obj["object_id"]
        )
    finally:
        stop.set()
        recorder.stop()
        archiver.stop()
        pub.close()
    assert "Traceback" not in recorder.log_text() + archiver.log_text()

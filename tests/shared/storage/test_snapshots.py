"""Snapshots go to the media store; Redis keeps only the pointer; outages never block."""

from __future__ import annotations

import threading

from shared.redisutil import connect
from shared.storage import FsMediaStore, snapshot_key
from shared.storage.snapshots import SnapshotWriter
from tests.helpers import wait_for


def test_snapshot_in_media_only_pointer_in_redis(media, redis_url, keys):
    w = SnapshotWriter(media)
    rb = connect(redis_url, decode=False)
    jpeg = b"\xff\xd8" + b"x" * 5000
    key = w.submit("lab/cam", "s1", jpeg, r=rb, keys=keys, ttl_s=60)
    assert key == snapshot_key("s1")
    wait_for(lambda: w.written == 1, 20)
    assert media.get(key) == jpeg
    held = rb.get(keys.snapshot("s1"))
    assert held == key.encode() and not held.startswith(b"\xff\xd8")
    w.close()


class StuckStore(FsMediaStore):
    """A store whose writes hang until released (an S3 endpoint that stopped answering)."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.release = threading.Event()

    def put(self, key, data, content_type="application/octet-stream"):
        self.release.wait(30)
        return super().put(key, data, content_type)


def test_a_hanging_store_never_blocks_the_caller(tmp_path):
    stuck = StuckStore(tmp_path / "media")
    w = SnapshotWriter(stuck, max_queue=4)
    # Every submit returns while the store hangs: the frame path goes on.
    results = [w.submit("c", f"s{i}", b"\xff\xd8jpeg") for i in range(50)]
    assert results.count(None) >= 45 and w.dropped >= 45  # dropped and counted
    stuck.release.set()
    wait_for(lambda: w.written == 50 - results.count(None), 20)
    w.close()


def test_media_snapshot_sink_keeps_no_jpeg_in_redis(tmp_path, redis_url, keys):
    from shared.storage.snapshots import MediaSnapshotSink

    media = FsMediaStore(tmp_path / "media")
    rb = connect(redis_url, decode=False)
    sink = MediaSnapshotSink(SnapshotWriter(media), rb, keys, ttl_s=60)
    sid = sink.new_id()
    jpeg = b"\xff\xd8" + bytes(range(256)) * 40
    sink.store_snapshot(sid, jpeg)
    wait_for(lambda: media.size(snapshot_key(sid)) == len(jpeg), 20)
    assert media.get(snapshot_key(sid)) == jpeg
    pointer = rb.get(keys.snapshot(sid))
    assert pointer == snapshot_key(sid).encode() and len(pointer) < 100
    sink.touch_snapshot(sid)
    assert 0 < rb.ttl(keys.snapshot(sid)) <= 60
    # Nothing in Redis under this test's prefix is a JPEG.
    for k in rb.scan_iter(match=keys.prefix + "*"):
        if rb.type(k) == b"string":
            assert not rb.get(k).startswith(b"\xff\xd8")
    sink.close()


def test_runtime_publish_event_puts_the_snapshot_in_the_media_store(tmp_path, redis_config, keys):
    from shared.config import WorkerConfig
    from shared.storage import StorageConfig
    from shared.storage.snapshots import use_media_snapshots
    from shared.worker import Processor, WorkerRuntime

    class Quiet(Processor):
        service = "snaptest"

        def process_batch(self, frames) -> None:
            pass

    runtime = WorkerRuntime(Quiet(), redis_config=redis_config, worker_config=WorkerConfig())
    storage = StorageConfig(media_dir=str(tmp_path / "media"))
    assert use_media_snapshots(runtime, storage=storage, state_dir=str(tmp_path))
    jpeg = b"\xff\xd8" + b"\x10" * 4000
    assert runtime.publish_event({"type": "object_entered", "camera_id": "c/1", "ts": 1}, jpeg)
    rb = connect(redis_config.url, decode=False)
    ev = [f for _i, f in rb.xrange(keys.stream("events"))][-1]
    import json

    sid = json.loads(ev[b"data"])["snapshot_id"]
    media = FsMediaStore(tmp_path / "media")
    wait_for(lambda: media.size(snapshot_key(sid)) == len(jpeg), 20)
    assert rb.get(keys.snapshot(sid)) == snapshot_key(sid).encode()  # the pointer only
    for k in rb.scan_iter(match=keys.prefix + "*"):
        if rb.type(k) == b"string":
            assert not rb.get(k).startswith(b"\xff\xd8"), k
    # `redis` keeps the old behaviour.
    assert not use_media_snapshots(runtime, storage=StorageConfig(snapshot_store="redis"))
    runtime.redis.close()

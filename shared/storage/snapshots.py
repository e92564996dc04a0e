"""Event snapshots into the media store, off the frame path.

Workers call :meth:`SnapshotWriter.submit` where they used to ``SET`` the JPEG in
Redis: it returns at once; a background thread writes the JPEG to the media store
(``snapshots/<camera>/<snapshot id>.jpg``).  Redis keeps only the id → media key
pointer (``keys.snapshot(id)``, a short string with the old TTL), so **no JPEG bytes
live in Redis**.  A slow or unreachable store never blocks the caller: the bounded
queue drops (and counts) what it cannot hold.
"""

from __future__ import annotations

import logging
import queue
import threading

import redis
from prometheus_client import Counter

from shared.keys import Keys
from shared.logs import BurstLimiter
from shared.storage.media import BadKey, MediaError, MediaStore, snapshot_key

log = logging.getLogger(__name__)

SNAPSHOTS = Counter(
    "sentri_snapshots_total", "Event snapshots handed to the media store, by result.", ["result"]
)


class SnapshotWriter:
    def __init__(self, media: MediaStore, max_queue: int = 64) -> None:
        self.media = media
        self.q: queue.Queue[tuple[str, bytes] | None] = queue.Queue(max_queue)
        self._burst = BurstLimiter()
        self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
        self._thread.start()
        self.written = 0
        self.dropped = 0

    def submit(
        self,
        camera_id: str,  # for logs only: the key comes from the snapshot id
        snapshot_id: str,
        jpeg: bytes,
        *,
        r: redis.Redis | None = None,
        keys: Keys | None = None,
        ttl_s: int | None = None,
    ) -> str | None:
        """Queue the JPEG; set the Redis pointer if ``r``/``keys`` are given.
        Returns the media key, or None when the snapshot was dropped."""
        try:
            key = snapshot_key(snapshot_id)
        except BadKey:
            SNAPSHOTS.labels("bad_id").inc()
            return None
        try:
            self.q.put_nowait((key, jpeg))
        except queue.Full:
            self.dropped += 1
            SNAPSHOTS.labels("dropped_queue_full").inc()
            self._warn("full", "snapshot dropped: media store too slow", camera_id=camera_id)
            return None
        if r is not None and keys is not None:
            r.set(keys.snapshot(snapshot_id), key, ex=ttl_s)
        return key

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                self.q.task_done()
                return
            key, jpeg = item
            try:
                self.media.put(key, jpeg, "image/jpeg")
                self.written += 1
                SNAPSHOTS.labels("stored").inc()
            except MediaError as exc:
                self.dropped += 1
                SNAPSHOTS.labels("dropped_" + type(exc).__name__).inc()
                self._warn("media", "snapshot not stored", error=str(exc)[:200])
            finally:
                if item is not None:
                    self.q.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written or dropped (tests, shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.q.unfinished_tasks

    def close(self) -> None:
        try:
            self.q.put(None, timeout=5)
        except queue.Full:
            pass
        self._thread.join(10)

    def _warn(self, key: str, msg: str, **extra: object) -> None:
        ok, suppressed = self._burst.should_log(key)
        if ok:
            log.warning(msg, extra={**extra, "suppressed": suppressed})


class MediaSnapshotSink:
    """The runtime's snapshot sink (``shared.publishing.SnapshotSink`` interface) on the
    media store: the JPEG goes to the media store off the frame path, Redis keeps the
    ``keys.snapshot(id)`` → media key pointer with the TTL (``touch_snapshot`` renews it)."""

    def __init__(self, writer: SnapshotWriter, r: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.writer, self.r, self.keys, self.ttl_s = writer, r, keys, ttl_s

    @staticmethod
    def new_id() -> str:
        import uuid

        return uuid.uuid4().hex

    def store_snapshot(self, snapshot_id: str, jpeg: bytes) -> None:
        """Queue the JPEG; set the pointer (raises ``redis.RedisError`` when refused,
        so the event publisher retries the event like before)."""
        key = snapshot_key(snapshot_id)
        self.r.set(self.keys.snapshot(snapshot_id), key, ex=self.ttl_s)
        self.writer.submit("", snapshot_id, jpeg)

    def touch_snapshot(self, snapshot_id: str) -> None:
        self.r.expire(self.keys.snapshot(snapshot_id), self.ttl_s)

    def close(self) -> None:
        self.writer.close()


def media_snapshot_sink(
    r: redis.Redis, keys: Keys, ttl_s: int, *, storage=None, state_dir: str | None = None
) -> MediaSnapshotSink:
    """Build the sink from the ``storage`` section (env/YAML when not given)."""
    from shared.config import GeneralConfig, load_section
    from shared.storage.config import StorageConfig
    from shared.storage.media import open_media_store

    storage = storage or load_section(StorageConfig, "storage")
    state_dir = state_dir or load_section(GeneralConfig, "general").state_dir
    return MediaSnapshotSink(SnapshotWriter(open_media_store(storage, state_dir)), r, keys, ttl_s)


def use_media_snapshots(runtime, *, storage=None, state_dir: str | None = None) -> bool:
    """Point a :class:`~shared.worker.WorkerRuntime`'s one snapshot sink at the media
    store (``storage.snapshot_store: media``, the default).  Never raises: when the
    media store cannot be opened the runtime keeps its Redis sink, with a warning."""
    import atexit

    from shared.config import ConfigError, GeneralConfig, load_section
    from shared.storage.config import StorageConfig
    from shared.storage.media import open_media_store

    try:
        storage = storage or load_section(StorageConfig, "storage")
        if storage.snapshot_store != "media":
            return False
        state_dir = state_dir or load_section(GeneralConfig, "general").state_dir
        media = open_media_store(storage, state_dir)
    except (ConfigError, MediaError, OSError) as exc:
        log.warning("snapshots stay in Redis: media store unavailable", extra={"error": str(exc)})
        return False
    old = runtime.snapshots
    sink = MediaSnapshotSink(SnapshotWriter(media), runtime.redis, runtime.keys, old.ttl_s)
    runtime.snapshots = sink
    runtime.events.snapshots = sink  # the event publisher writes through it
    atexit.register(sink.writer.flush, 5.0)
    log.info("snapshots go to the media store", extra={"media": media.kind})
    return True

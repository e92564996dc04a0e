"""The worker runtime shared by detector, faces and analyst.

What it does, so services do not each re-implement it:

* **Camera sharding.**  Every replica of a service heartbeats into a Redis sorted set
  (``members:<service>``).  A camera belongs to the live replica that wins
  rendezvous (highest-random-weight) hashing, so every camera has exactly one owner
  and when a replica dies only its cameras move.  Cameras whose processing switch
  (``processing:<service>`` hash) is off are not owned by anyone.
* **Subscriptions follow ownership.**  The SUB socket subscribes only to the owned
  cameras' topics, so ZeroMQ filters at the publisher.
* **Latest frame per camera.**  A receiver thread drains the socket into a
  :class:`LatestFrameBuffer`; a newer frame replaces an unprocessed older one, which
  is counted as skipped.  Nothing queues without bound.
* **Round-robin batches.**  The processing loop takes up to ``max_batch`` frames, one
  per camera, starting after the camera served last, and hands them to the
  service's :class:`Processor`.
* **Stats.**  Per-camera processed/skipped/latency go to Prometheus and to the
  ``worker_stats:<service>`` hash the gateway shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis
import zmq

from shared import metrics
from shared.config import RedisConfig, WorkerConfig
from shared.fanout import FanoutKeys, FanoutSubscriber
from shared.keys import Keys
from shared.logs import BurstLimiter
from shared.protocol import DEFAULT_MAX_PIXELS, FrameHeader, ProtocolError, jpeg_dimensions
from shared.publishing import PUBLISH_FAILURES, EventPublisher, SnapshotSink
from shared.redisutil import connect, publish_record

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- frames


@dataclass(slots=True)
class Frame:
    """One received frame.  ``image()`` decodes the JPEG on demand (BGR ndarray).

    The decoded size is capped HERE, once for every worker: the JPEG's own SOF is
    read first (bounded walk, no pixel decoding) and a frame declaring more than
    ``max_pixels`` pixels, or a size other than its header's, is never decoded.
    Such a frame is reported through ``on_invalid`` (the runtime counts it in
    ``sentri_invalid_input_total``) and ``image()`` returns None.
    """

    header: FrameHeader
    #: The JPEG as received: a view of the ZeroMQ message, not a copy.
    jpeg: bytes | memoryview
    #: Local receive time (unix s).  Ages use :attr:`rx_time`, never the agent's clock.
    received: float = field(default_factory=time.time)
    max_pixels: int = DEFAULT_MAX_PIXELS
    on_invalid: Callable[[str, str], None] | None = None
    _image: np.ndarray | None = None
    #: Why the frame cannot be decoded (a ``ProtocolError`` reason), once known.
    invalid: str | None = None

    @property
    def camera_id(self) -> str:
        return self.header.camera_id

    @property
    def capture_time(self) -> float:
        """The agent's capture time (unix s): shown to users, never used to decide."""
        return self.header.ts / 1e9

    @property
    def rx_time(self) -> float:
        """When the frame reached the cluster (unix s, cluster clock): ingest's ``rx``
        stamp when present, else this worker's receive time.  Decisions (debounce,
        ordering, ages) use this, so an agent's wrong clock cannot steer them."""
        rx = self.header.rx
        return rx / 1e9 if rx is not None else self.received

    @property
    def ts_ms(self) -> int:
        """:attr:`rx_time` in unix ms: the ``ts`` of every record and event."""
        return int(self.rx_time * 1000)

    @property
    def capture_ts_ms(self) -> int:
        """The agent's capture time in unix ms (records' ``capture_ts``, display only)."""
        return self.header.ts // 1_000_000

    def dimensions(self) -> tuple[int, int] | None:
        """(width, height) when the frame may be decoded, else None (reported once)."""
        if self.invalid is not None:
            return None
        try:
            w, h = jpeg_dimensions(self.jpeg)
            if w * h > self.max_pixels:
                raise ProtocolError("frame_too_large", f"{w}x{h} > {self.max_pixels} pixels")
            if (w, h) != (self.header.w, self.header.h):
                raise ProtocolError("bad_jpeg", f"{w}x{h} != header")
        except ProtocolError as exc:
            self._refuse(exc.reason, exc.detail)
            return None
        return w, h

    def image(self) -> np.ndarray | None:
        """BGR image, or None when the frame is refused or does not decode (reported)."""
        if self._image is None and self.dimensions() is not None:
            import cv2

            arr = np.frombuffer(self.jpeg, dtype=np.uint8)
            self._image = cv2.imdecode(arr, cv2.IMREAD_COLOR)
            if self._image is None:
                self._refuse("bad_jpeg", "does not decode")
        return self._image

    def release(self) -> None:
        """Forget the decoded image (the runtime calls this once a batch is done)."""
        self._image = None

    def _refuse(self, reason: str, detail: str) -> None:
        self.invalid = reason
        if self.on_invalid is not None:
            self.on_invalid(reason, f"{self.camera_id}: {detail}")


class LatestFrameBuffer:
    """Thread-safe latest-frame-per-camera slots with round-robin takeout."""

    def __init__(self) -> None:
        self._frames: dict[str, Frame] = {}
        self._rr: deque[str] = deque()  # camera order for round-robin
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> Frame | None:
        """Store ``frame``; returns the unprocessed frame it replaced (a skip), if any.

        The frame that arrived last wins (ZeroMQ keeps a publisher's order), except
        that a frame ingest stamped earlier (``rx``) than the one held is itself
        returned as skipped.  The agent's capture time is never compared: a wrong
        agent clock cannot pin an old frame in the buffer.
        """
        cam = frame.camera_id
        with self._cond:
            old = self._frames.get(cam)
            if (
                old is not None
                and old.header.rx is not None
                and frame.header.rx is not None
                and old.header.rx > frame.header.rx
            ):
                return frame
            self._frames[cam] = frame
            if cam not in self._rr:
                self._rr.append(cam)
            self._cond.notify()
            return old

    def take(self, max_n: int, timeout: float) -> list[Frame]:
        """Up to ``max_n`` frames from distinct cameras, round-robin; waits up to ``timeout``."""
        with self._cond:
            if not self._frames:
                self._cond.wait(timeout)
            out: list[Frame] = []
            for _ in range(len(self._rr)):
                if len(out) >= max_n:
                    break
                cam = self._rr[0]
                self._rr.rotate(-1)
                frame = self._frames.pop(cam, None)
                if frame is not None:
                    out.append(frame)
            return out

    def discard(self, keep: Iterable[str]) -> list[Frame]:
        """Drop cameras not in ``keep``; returns the dropped frames."""
        keep = set(keep)
        with self._cond:
            gone = [c for c in self._frames if c not in keep]
            dropped = [self._frames.pop(c) for c in gone]
            for c in list(self._rr):
                if c not in keep:
                    self._rr.remove(c)
            return dropped

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._frames)


# ------------------------------------------------------------------------- sharding


def rendezvous_weight(member: str, camera_id: str) -> int:
    digest = hashlib.blake2b(f"{member}\x00{camera_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(camera_id: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for ``camera_id`` (None if no members)."""
    best, best_w = None, -1
    for m in members:
        w = rendezvous_weight(m, camera_id)
        if w > best_w or (w == best_w and best is not None and m > best):
            best, best_w = m, w
    return best


def shard_cameras(cameras: Iterable[str], members: Iterable[str], me: str) -> set[str]:
    members = list(members)
    return {c for c in cameras if rendezvous_owner(c, members) == me}


def redis_now(r: redis.Redis) -> float:
    """The Redis server's clock (unix s): the one clock replicas compare."""
    sec, usec = r.time()
    return int(sec) + int(usec) / 1e6


# Heartbeat and liveness read the server's clock inside Redis, so no replica's wall
# clock matters: a replica 60 s fast or 5 s slow heartbeats exactly like the others.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 10 * tonumber(ARGV[2]))
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
"""
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"""


def live_members(r: redis.Redis, keys: Keys, service: str, ttl: float) -> list[str]:
    """Replicas of ``service`` that heartbeated within ``ttl`` seconds, by the Redis
    server's clock: the one rule every reader (workers, gateway) should use."""
    members = r.eval(_LIVE, 1, keys.members(service), repr(float(ttl)))
    return sorted(m.decode() if isinstance(m, bytes) else m for m in members)


class Membership:
    """Replica liveness in a Redis sorted set scored by last heartbeat.

    Scores are the Redis server's time (``TIME`` inside a script), never this
    replica's wall clock: membership must not depend on replicas' clocks agreeing.
    """

    def __init__(self, r: redis.Redis, keys: Keys, service: str, replica_id: str, ttl: float):
        self.r, self.keys, self.service = r, keys, service
        self.key, self.replica_id, self.ttl = keys.members(service), replica_id, ttl

    def heartbeat(self) -> list[str]:
        """Record this replica as alive now; returns the live members (sorted)."""
        members = self.r.eval(_HEARTBEAT, 1, self.key, self.replica_id, repr(float(self.ttl)))
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def live(self) -> list[str]:
        return live_members(self.r, self.keys, self.service, self.ttl)

    def leave(self) -> None:
        try:
            self.r.zrem(self.key, self.replica_id)
        except redis.RedisError:
            log.warning("could not leave membership", extra={"replica": self.replica_id})


def processing_enabled(
    r: redis.Redis, keys: Keys, service: str, cameras: Iterable[str], default: bool
) -> set[str]:
    """Cameras whose processing switch for ``service`` is on (absent = ``default``)."""
    flags = r.hgetall(keys.processing(service))
    flags = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in flags.items()
    }
    out = set()
    for cam in cameras:
        flag = flags.get(cam)
        if flag is None:
            if default:
                out.add(cam)
        elif flag == "1":
            out.add(cam)
    return out


def set_processing(r: redis.Redis, keys: Keys, service: str, camera_id: str, on: bool) -> None:
    r.hset(keys.processing(service), camera_id, "1" if on else "0")


# ------------------------------------------------------------------------ processor


class Processor:
    """What a service plugs into the runtime.  Override ``process_batch``."""

    service: str = "worker"
    #: How many cameras' frames one ``process_batch`` call can take.
    max_batch: int = 1
    #: Retention of this service's event snapshots (None: ``worker.snapshot_ttl_s``).
    snapshot_ttl_s: int | None = None
    #: A lower decoded-size cap of this service (None: ``worker.max_pixels`` only).
    max_pixels: int | None = None

    def setup(self, runtime: WorkerRuntime) -> None:
        """Called once before frames flow (load models here)."""

    def process_batch(self, frames: list[Frame]) -> Iterable[Frame] | None:
        """Process ``frames``; may return the frames it passed over as static (counted
        as ``skipped_static`` instead of processed)."""
        raise NotImplementedError

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        """Ownership changed (drop per-camera state of cameras no longer owned)."""

    def close(self) -> None:
        """Release resources."""


@dataclass
class CameraStats:
    received: int = 0
    processed: int = 0
    skipped: int = 0
    skipped_static: int = 0
    latency_ewma_ms: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=64))  # processed times
    #: The service's own per-camera counters (``WorkerRuntime.count``), e.g. faces'
    #: ``frames_gated``; shown with the runtime's in ``worker_stats:<service>``.
    counters: dict[str, float] = field(default_factory=dict)

    def fps(self, now: float, window: float = 5.0) -> float:
        n = sum(1 for t in self.recent if now - t <= window)
        return round(n / window, 2)


def default_replica_id(service: str) -> str:
    return f"{service}-{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class WorkerRuntime:
    """Runs a :class:`Processor` on this replica's shard of cameras."""

    def __init__(
        self,
        processor: Processor,
        *,
        redis_config: RedisConfig,
        worker_config: WorkerConfig,
        default_enabled: bool = True,
        zmq_context: zmq.Context | None = None,
    ) -> None:
        if not redis_config.url:
            raise ValueError("redis.url is required for workers")
        self.processor = processor
        self.service = processor.service
        self.redis_config = redis_config
        self.config = worker_config
        self.default_enabled = default_enabled
        self.keys = Keys(redis_config.prefix)
        self.redis = connect(redis_config.url)
        self.replica_id = worker_config.replica_id or default_replica_id(self.service)
        self.membership = Membership(
            self.redis, self.keys, self.service, self.replica_id, worker_config.member_ttl_s
        )
        #: This replica's fan-out key pair (registered while it runs; used when ingest's
        #: fan-out speaks CURVE).
        self.fanout_keys = FanoutKeys(
            self.redis, self.keys, name=f"{self.service}/{self.replica_id}"
        )
        self.buffer = LatestFrameBuffer()
        self.ctx = zmq_context or zmq.Context.instance()
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._owned: frozenset[str] = frozenset()
        self._owned_lock = threading.Lock()
        self._owned_version = 0
        self.stats: dict[str, CameraStats] = {}
        self._stats_lock = threading.Lock()
        self._burst = BurstLimiter()
        self._threads: list[threading.Thread] = []
        self.batch_size = max(1, min(worker_config.max_batch, processor.max_batch))
        #: The one place snapshots are stored (see :mod:`shared.publishing`).
        self.snapshots = SnapshotSink(
            self.redis, self.keys, processor.snapshot_ttl_s or worker_config.snapshot_ttl_s
        )
        self.events = EventPublisher(
            self.service,
            self.publish,
            self.snapshots,
            max_events=worker_config.max_pending_events,
            max_bytes=worker_config.max_pending_event_bytes,
        )

    # ------------------------------------------------------------------ public
    @property
    def owned(self) -> frozenset[str]:
        with self._owned_lock:
            return self._owned

    def publish(self, stream: str, record: dict[str, Any], *, latest: bool = True) -> str:
        maxlen = (
            self.redis_config.events_maxlen
            if stream == "events"
            else self.redis_config.stream_maxlen
        )
        return publish_record(self.redis, self.keys, stream, record, maxlen=maxlen, latest=latest)

    def publish_result(self, stream: str, record: dict[str, Any]) -> str | None:
        """Write a per-frame result record; when Redis refuses it, count and drop it
        (the next frame supersedes it).  Returns the entry id, or None."""
        try:
            return self.publish(stream, record)
        except redis.RedisError as exc:
            PUBLISH_FAILURES.labels(self.service, stream).inc()
            ok, suppressed = self._burst.should_log(f"publish:{stream}")
            if ok:
                log.warning(
                    "could not publish result; dropped",
                    extra={"service": self.service, "stream": stream, "error": str(exc),
                           "camera_id": record.get("camera_id"), "suppressed": suppressed},
                )  # fmt: skip
            return None

    def publish_event(
        self,
        record: dict[str, Any],
        snapshot: bytes | None = None,
        *,
        result: tuple[str, dict[str, Any]] | None = None,
        result_id_field: str | None = None,
    ) -> bool:
        """Publish an event (with its snapshot JPEG) in order, retrying what Redis
        refuses from a bounded queue: :meth:`shared.publishing.EventPublisher.publish_event`."""
        return self.events.publish_event(
            record, snapshot, result=result, result_id_field=result_id_field
        )

    def start(self) -> WorkerRuntime:
        """Set up the processor and start the threads (non-blocking)."""
        self.processor.setup(self)
        # A processor may size its batches once its model is loaded.
        self.batch_size = max(1, min(self.config.max_batch, self.processor.max_batch))
        self.fanout_keys.start()  # before the receiver opens its socket
        for target, name in (
            (self._receive_loop, "recv"),
            (self._membership_loop, "members"),
            (self._process_loop, "process"),
        ):
            t = threading.Thread(target=target, name=f"{self.service}-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def run(self) -> None:
        """Start and block until :meth:`stop` (or Ctrl-C)."""
        self.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.buffer.wake()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self.fanout_keys.stop()
        self.membership.leave()
        try:
            self.processor.close()
        finally:
            try:
                if not self.events.flush():
                    log.warning(
                        "stopping with unpublished events",
                        extra={"service": self.service, "pending": self.events.pending},
                    )
            finally:
                self.redis.close()

    # --------------------------------------------------------------- internals
    def _cam_stats(self, cam: str) -> CameraStats:
        st = self.stats.get(cam)
        if st is None:
            with self._stats_lock:
                st = self.stats.setdefault(cam, CameraStats())
        return st

    def count(self, camera_id: str, name: str, n: float = 1) -> None:
        """Add ``n`` to a service counter of a camera (written with the runtime's stats)."""
        st = self._cam_stats(camera_id)
        with self._stats_lock:
            st.counters[name] = st.counters.get(name, 0) + n

    def counters(self, camera_id: str) -> dict[str, float]:
        """A copy of a camera's service counters."""
        st = self._cam_stats(camera_id)
        with self._stats_lock:
            return dict(st.counters)

    def _skip(self, frame: Frame) -> None:
        st = self._cam_stats(frame.camera_id)
        with self._stats_lock:  # the receiver, processor and membership threads skip
            st.skipped += 1
        metrics.WORKER_FRAMES_SKIPPED.labels(self.service, frame.camera_id).inc()

    def count_invalid(self, reason: str, detail: str = "") -> None:
        """Count (and log once per burst) a bad input, e.g. an undecodable JPEG."""
        metrics.INVALID_INPUT.labels(self.service, reason).inc()
        ok, suppressed = self._burst.should_log(reason)
        if ok:
            log.warning(
                "dropped invalid frame",
                extra={"reason": reason, "detail": detail, "suppressed": suppressed},
            )

    def _receive_loop(self) -> None:
        sub = FanoutSubscriber(
            self.ctx,
            self.config.ingest_pub,
            rcv_hwm=self.config.rcv_hwm,
            on_invalid=lambda exc: self.count_invalid(exc.reason, exc.detail),
            keys=self.fanout_keys,
        )
        max_pixels = min(self.config.max_pixels, self.processor.max_pixels or 2**62)
        try:
            while not self.stop_event.is_set():
                sub.follow(self.owned)
                if not sub.poll(100):
                    continue
                # Drain everything waiting: the buffer keeps only the newest per camera.
                for header, jpeg in sub.drain(1000):
                    cam = header.camera_id
                    if cam not in self._owned:
                        continue  # in flight across an ownership change
                    st = self._cam_stats(cam)
                    frame = Frame(
                        header, jpeg, max_pixels=max_pixels, on_invalid=self.count_invalid
                    )
                    # Counted with its placing, so that a stats snapshot always reads
                    # received = processed + skipped + (buffered and in flight).
                    with self._stats_lock:
                        st.received += 1
                        replaced = self.buffer.put(frame)  # same camera's frame, if any
                        if replaced is not None:
                            st.skipped += 1
                    metrics.WORKER_FRAMES_RECEIVED.labels(self.service, cam).inc()
                    if replaced is not None:
                        metrics.WORKER_FRAMES_SKIPPED.labels(self.service, cam).inc()
                metrics.WORKER_BUFFERED.labels(self.service).set(len(self.buffer))
        except Exception:
            log.exception("receiver crashed", extra={"service": self.service})
            self.stop_event.set()
        finally:
            sub.close()

    def _membership_loop(self) -> None:
        interval = self.config.heartbeat_s
        while not self.stop_event.is_set():
            self.events.flush()  # events Redis refused earlier, in order
            try:
                self._membership_tick()
            except redis.RedisError as exc:
                ok, _ = self._burst.should_log("redis")
                if ok:
                    log.warning(
                        "redis unavailable; keeping current cameras", extra={"error": str(exc)}
                    )
            except Exception:
                log.exception("membership tick failed")
            self.stop_event.wait(interval)

    def _membership_tick(self) -> None:
        members = self.membership.heartbeat()
        if self.replica_id not in members:
            members.append(self.replica_id)
        cameras = {
            c.decode() if isinstance(c, bytes) else c
            for c in self.redis.smembers(self.keys.cameras)
        }
        enabled = processing_enabled(
            self.redis, self.keys, self.service, cameras, self.default_enabled
        )
        owned = frozenset(shard_cameras(enabled, members, self.replica_id))
        changed = False
        with self._owned_lock:
            if owned != self._owned:
                self._owned = owned
                self._owned_version += 1
                changed = True
        if changed:
            for f in self.buffer.discard(owned):
                self._skip(f)
            log.info(
                "cameras assigned",
                extra={"replica": self.replica_id, "owned": len(owned), "members": len(members)},
            )
            metrics.WORKER_OWNED_CAMERAS.labels(self.service, self.replica_id).set(len(owned))
            try:
                self.processor.on_cameras_changed(owned)
            except Exception:
                log.exception("on_cameras_changed failed")
        self._write_stats(owned)
        self.ready.set()

    def _write_stats(self, owned: frozenset[str]) -> None:
        now = time.time()
        mapping = {}
        for cam in owned:
            st = self._cam_stats(cam)
            with self._stats_lock:  # one consistent reading of the counters
                counts = {
                    "received": st.received,
                    "processed": st.processed,
                    "skipped": st.skipped,
                    "skipped_static": st.skipped_static,
                }
                counters = dict(st.counters)
            mapping[cam] = json.dumps(
                {
                    "replica": self.replica_id,
                    "fps": st.fps(now),
                    **counts,
                    "latency_ms": round(st.latency_ewma_ms, 1),
                    "updated": round(now, 3),
                    "counters": counters,
                }
            )
        if mapping:
            self.redis.hset(self.keys.worker_stats(self.service), mapping=mapping)

    def _process_loop(self) -> None:
        max_age = self.config.max_frame_age_s
        while not self.stop_event.is_set():
            frames = self.buffer.take(self.batch_size, timeout=0.2)
            if not frames:
                continue
            now = time.time()
            owned = self.owned
            fresh = []
            for f in frames:
                # Switched off or moved to another replica meanwhile, or too old.
                if f.camera_id not in owned or now - f.received > max_age:
                    self._skip(f)
                else:
                    fresh.append(f)
            if not fresh:
                continue
            t0 = time.perf_counter()
            try:
                static = {id(f) for f in self.processor.process_batch(fresh) or ()}
            except Exception:
                metrics.WORKER_ERRORS.labels(self.service).inc()
                ok, suppressed = self._burst.should_log("process")
                if ok:
                    log.exception("process_batch failed", extra={"suppressed": suppressed})
                continue
            finally:
                for f in fresh:
                    f.release()  # a processor keeping a frame does not keep its pixels
            metrics.WORKER_PROCESS_SECONDS.labels(self.service).observe(time.perf_counter() - t0)
            done = time.time()
            for f in fresh:
                st = self._cam_stats(f.camera_id)
                with self._stats_lock:
                    if id(f) in static:
                        st.skipped_static += 1
                        continue
                    st.processed += 1
                st.recent.append(done)
                lat = max(0.0, done - f.rx_time)  # cluster clocks only
                st.latency_ewma_ms = (
                    lat * 1000 if st.processed == 1 else 0.8 * st.latency_ewma_ms + 200 * lat
                )
                metrics.WORKER_FRAMES_PROCESSED.labels(self.service, f.camera_id).inc()
                metrics.WORKER_LATENCY.labels(self.service).observe(lat)


def serve_worker(
    runtime: WorkerRuntime,
    *,
    name: str,
    metrics_port: int = 0,
    ready_fields: Any = None,
    ready_timeout: float = 10.0,
    expected_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a worker process: signals, metrics, start, one ``ready`` line, clean stop.

    ``ready_fields`` is a callable returning extra fields for the ready log line
    (called after the processor is set up).  Returns the process exit code: 0 when
    stopped by SIGTERM/SIGINT, 1 when the worker failed to start or a runtime
    thread died.  ``expected_errors`` fail the start with one clear line, no traceback.
    """
    import signal

    from shared.metrics import start_metrics_server
    from shared.redisutil import redact_url, wait_for_redis

    requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not requested.is_set():
            log.info("stopping", extra={"service": name, "signal": signal.Signals(signum).name})
        requested.set()
        runtime.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = runtime.redis_config.url or ""
    try:
        wait_for_redis(url, timeout=30.0)
    except TimeoutError as exc:
        log.error("redis unreachable", extra={"service": name, "error": str(exc)})
        return 1
    from shared.storage.snapshots import use_media_snapshots

    use_media_snapshots(runtime)  # snapshots to the media store; Redis keeps only ids
    try:
        start_metrics_server(metrics_port)
        runtime.start()  # the processor loads its models here
    except Exception as exc:
        log.error(f"{name} failed to start: {exc}", exc_info=not isinstance(exc, expected_errors))
        runtime.stop()
        return 1
    # Ready = processor set up and the first membership round done (Redis reachable).
    if runtime.ready.wait(max(ready_timeout, 3 * runtime.config.heartbeat_s)):
        fields = {
            "replica": runtime.replica_id,
            "ingest_pub": runtime.config.ingest_pub,
            "redis": redact_url(url),
            "cameras": len(runtime.owned),
        }
        if ready_fields is not None:
            fields.update(ready_fields())
        log.info(f"{name} ready", extra=fields)
    elif not runtime.stop_event.is_set():
        log.warning("no membership round yet (is Redis reachable?); serving anyway",
                    extra={"service": name})  # fmt: skip
    try:
        while not runtime.stop_event.wait(0.5):
            pass
    finally:
        runtime.stop()
    log.info(f"{name} stopped", extra={"replica": runtime.replica_id})
    return 0 if requested.is_set() else 1

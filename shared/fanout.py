"""Receiving ingest's frame fan-out: the one SUB loop every receiver uses.

Used by the worker runtime (:mod:`shared.worker`, the cameras a replica owns) and
the gateway's live view (:mod:`services.gateway.live`, the cameras someone watches).

:class:`FanoutSubscriber` is owned by ONE thread (ZeroMQ sockets are not
thread-safe).  That thread:

1. calls :meth:`FanoutSubscriber.follow` with the cameras it wants now; the socket's
   topic subscriptions follow (ZeroMQ then filters at the publisher, so frames of
   other cameras never cross the network);
2. calls :meth:`FanoutSubscriber.poll` and then :meth:`FanoutSubscriber.drain`,
   which yields validated ``(header, jpeg)`` pairs for wanted cameras only.

Receiving copies nothing: messages are received as ZeroMQ frames and the JPEG is
handed out as a ``memoryview`` of the received message (it stays valid as long as
it is referenced).  Invalid messages are passed to ``on_invalid`` (count them) and
skipped; the loop never raises for bad input.

When ingest's fan-out speaks CURVE (``ingest.fanout_curve``), a receiver needs a key
pair of its own, registered in Redis, and ingest's public key: :class:`FanoutKeys`
makes an ephemeral key pair at start (nothing on disk: images have read-only roots),
keeps its registration alive (a TTL refreshed every few seconds) and follows what
ingest publishes about the fan-out (:mod:`shared.ingest_info`).  A subscriber given
``keys`` reconnects with the right options whenever that changes (ingest restarted
with another mode or key pair).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from shared.protocol import (
    DEFAULT_MAX_JPEG_BYTES,
    FrameHeader,
    ProtocolError,
    decode_fanout,
    topic_for,
)
from shared.security import SubscriberKeyStore, client_socket_options, fingerprint, generate_keypair

if TYPE_CHECKING:
    import redis

    from shared.keys import Keys

log = logging.getLogger(__name__)

#: A receiver's key registration lives this long without a refresh.
KEY_TTL_S = 30.0
#: How often a receiver refreshes its registration and re-reads ingest's fan-out mode.
KEY_REFRESH_S = 2.0


@dataclass(frozen=True)
class FanoutCredentials:
    """What a SUB socket needs for a CURVE fan-out (``None`` instead = plaintext)."""

    public: str
    secret: str
    server_key: str


class FanoutKeys:
    """A receiver process's fan-out key pair and ingest's current fan-out mode.

    :meth:`start` registers the public key (``fanout_keys`` in Redis, with a TTL) and
    reads ingest's info once, then a thread (``fanout-keys``) repeats both every
    ``refresh_s``.  :attr:`credentials` is what a subscriber should use now: None
    while ingest's fan-out is plaintext or ingest has not published yet.
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        *,
        name: str = "receiver",
        ttl_s: float = KEY_TTL_S,
        refresh_s: float = KEY_REFRESH_S,
    ) -> None:
        self.r, self.keys, self.name = r, keys, name
        self.ttl_s = max(ttl_s, 3 * refresh_s)
        self.refresh_s = refresh_s
        self.public, self.secret = generate_keypair()
        self.store = SubscriberKeyStore(r, keys)
        self._credentials: FanoutCredentials | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    @property
    def credentials(self) -> FanoutCredentials | None:
        return self._credentials

    def refresh(self) -> None:
        """Register the key again and re-read ingest's fan-out key (raises RedisError)."""
        from shared.ingest_info import read_ingest_info

        self.store.register(self.public, self.ttl_s)
        info = read_ingest_info(self.r, self.keys)
        server_key = info.fanout_key if info is not None else None
        creds = FanoutCredentials(self.public, self.secret, server_key) if server_key else None
        if creds != self._credentials:
            log.info(
                "fan-out mode",
                extra={"receiver": self.name, "fanout": "curve" if creds else "plaintext",
                       "key_fingerprint": fingerprint(self.public),
                       **({"ingest_fingerprint": fingerprint(server_key)} if server_key else {})},
            )  # fmt: skip
            self._credentials = creds

    def _refresh_logged(self) -> None:
        import redis

        try:
            self.refresh()
        except redis.RedisError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning(
                    "fan-out key refresh failed (redis); keeping the current mode",
                    extra={"receiver": self.name, "error": str(exc), "failures": self.errors},
                )

    def start(self) -> FanoutKeys:
        """Register and read once (now), then keep doing it on a thread."""
        self._refresh_logged()
        self._thread = threading.Thread(target=self._loop, name="fanout-keys", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self._refresh_logged()

    def stop(self) -> None:
        """Stop refreshing and withdraw the key (best effort: it expires anyway)."""
        import redis

        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.store.unregister(self.public)
        except redis.RedisError:
            pass  # expires after ttl_s


class FanoutSubscriber:
    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        rcv_hwm: int = 16,
        max_jpeg_bytes: int = DEFAULT_MAX_JPEG_BYTES,
        on_invalid: Callable[[ProtocolError], None] | None = None,
        keys: FanoutKeys | None = None,
    ) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.rcv_hwm = rcv_hwm
        self.max_jpeg_bytes = max_jpeg_bytes
        self.on_invalid = on_invalid
        self.keys = keys
        self._subscribed: frozenset[str] = frozenset()
        self._open(keys.credentials if keys is not None else None)

    def _open(self, credentials: FanoutCredentials | None) -> None:
        """A new SUB socket (CURVE options are fixed before connect) with the current
        subscriptions."""
        self.credentials = credentials
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, self.rcv_hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 200)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if credentials is not None:
            client_socket_options(
                self.sock, credentials.public, credentials.secret, credentials.server_key
            )
        for cam in self._subscribed:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic_for(cam))
        self.sock.connect(self.endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)

    def _follow_credentials(self) -> None:
        """Reconnect when ingest's fan-out mode or key changed."""
        if self.keys is None:
            return
        creds = self.keys.credentials
        if creds != self.credentials:
            log.info(
                "fan-out reconnecting",
                extra={"endpoint": self.endpoint, "fanout": "curve" if creds else "plaintext"},
            )
            self.sock.close(0)
            self._open(creds)

    @property
    def subscribed(self) -> frozenset[str]:
        """The cameras whose topics the socket is subscribed to now."""
        return self._subscribed

    def follow(self, cameras: Iterable[str]) -> bool:
        """Subscribe to exactly ``cameras``; True when the set changed."""
        wanted = frozenset(cameras)
        if wanted == self._subscribed:
            return False
        for cam in wanted - self._subscribed:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic_for(cam))
        for cam in self._subscribed - wanted:
            self.sock.setsockopt(zmq.UNSUBSCRIBE, topic_for(cam))
        self._subscribed = wanted
        return True

    def poll(self, timeout_ms: int) -> bool:
        """True when a message is waiting (waits up to ``timeout_ms``)."""
        self._follow_credentials()
        return bool(self._poller.poll(timeout_ms))

    def drain(self, max_messages: int = 1000) -> Iterator[tuple[FrameHeader, memoryview]]:
        """Valid frames of subscribed cameras waiting now (at most ``max_messages``
        messages are taken off the socket, so the caller's other duties get a turn)."""
        for _ in range(max_messages):
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                header, jpeg = decode_fanout([p.buffer for p in parts], self.max_jpeg_bytes)
            except ProtocolError as exc:
                if self.on_invalid is not None:
                    self.on_invalid(exc)
                continue
            if header.camera_id not in self._subscribed:
                continue  # in flight across an unsubscribe
            yield header, jpeg

    def close(self) -> None:
        self.sock.close(0)

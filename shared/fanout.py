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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import zmq

from shared.protocol import (
    DEFAULT_MAX_JPEG_BYTES,
    FrameHeader,
    ProtocolError,
    decode_fanout,
    topic_for,
)


class FanoutSubscriber:
    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        *,
        rcv_hwm: int = 16,
        max_jpeg_bytes: int = DEFAULT_MAX_JPEG_BYTES,
        on_invalid: Callable[[ProtocolError], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_jpeg_bytes = max_jpeg_bytes
        self.on_invalid = on_invalid
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 200)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.sock.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.sock, zmq.POLLIN)
        self._subscribed: frozenset[str] = frozenset()

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

"""Ingest's side of the agent protocol on real ZeroMQ sockets (PULL + ROUTER).

Behaves like ingest where the agent can tell: validates every frame with
``decode_frame``, answers ``register`` and known clients' heartbeats with ``ack``
and unknown clients' heartbeats with ``reregister`` (what a restarted ingest
does).  Like ingest it learns each client's routing id from its ``register``
(the agent's routing id is random per socket) and answers a heartbeat from a
routing id that did not register with ``reregister``.  ``answer=False`` makes it
mute, like an ingest that hangs.
The sockets live on one background thread; tests talk to it through methods.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from shared.protocol import (
    AGENT_TO_INGEST,
    FrameHeader,
    ProtocolError,
    decode_control,
    decode_frame,
    encode_control,
)
from shared.security import server_socket_options


@dataclass(slots=True)
class Received:
    at: float  # time.monotonic() on arrival
    header: FrameHeader
    size: int


class FakeIngest:
    def __init__(
        self,
        frame_port: int,
        control_port: int,
        *,
        bind_frames: bool = True,
        curve: tuple[str, str] | None = None,
        authenticator: Callable[[zmq.Context], Any] | None = None,
    ) -> None:
        self.frame_url = f"tcp://127.0.0.1:{frame_port}"
        self.control_url = f"tcp://127.0.0.1:{control_port}"
        self.answer = True
        #: client id -> routing id of its last register (ingest's session table).
        self.registered: dict[str, bytes] = {}
        self.frames: list[Received] = []
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.invalid: list[str] = []
        self.last_jpeg: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._tasks: queue.Queue = queue.Queue()
        self._ctx = zmq.Context()
        self._curve = curve  # (public, secret) of the server: CURVE on both sockets
        self.auth = authenticator(self._ctx) if authenticator else None
        self._stop = threading.Event()
        self._pull: zmq.Socket | None = None
        self._router: zmq.Socket | None = None
        self._bind_frames_now = bind_frames
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-ingest", daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    # ------------------------------------------------------------ test-side API

    def _call(self, fn, *args) -> None:
        done = threading.Event()
        self._tasks.put((fn, args, done))
        assert done.wait(5), "fake ingest thread did not run the task"

    def routing_id(self, client_id: str) -> bytes:
        with self._lock:
            ident = self.registered.get(client_id)
        assert ident is not None, f"{client_id} has not registered"
        return ident

    def send(self, to: str, msg_type: str, /, **fields: Any) -> None:
        payload = encode_control(msg_type, **fields)
        ident = self.routing_id(to)
        self._call(lambda: self._router.send_multipart([ident, payload]))

    def send_raw(self, client_id: str, *parts: bytes) -> None:
        ident = self.routing_id(client_id)
        self._call(lambda: self._router.send_multipart([ident, *parts]))

    def bind_frames(self) -> None:
        self._call(self._open_pull)

    def restart_control(self, forget: bool = True) -> None:
        """Close the ROUTER and bind a new one on the same port (ingest restart)."""
        self._call(self._close_router)
        if forget:
            with self._lock:
                self.registered.clear()
        self._call(self._open_router)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.auth is not None:
            self.auth.stop()
        self._ctx.term()

    def of_type(self, msg_type: str, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            return [m for t, m in self.messages if m["type"] == msg_type and t >= since]

    def frames_of(self, camera_id: str, since: float = 0.0) -> list[Received]:
        with self._lock:
            return [f for f in self.frames if f.header.camera_id == camera_id and f.at >= since]

    def camera_ids(self) -> set[str]:
        with self._lock:
            return {f.header.camera_id for f in self.frames}

    # ------------------------------------------------------------ socket thread

    def _open_pull(self) -> None:
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        if self._curve:
            server_socket_options(self._pull, *self._curve)
        self._pull.bind(self.frame_url)

    def _open_router(self) -> None:
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self._curve:
            server_socket_options(self._router, *self._curve)
        # A freshly closed port may still be held briefly by the kernel: retry.
        deadline = time.monotonic() + 5
        while True:
            try:
                self._router.bind(self.control_url)
                return
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _close_router(self) -> None:
        if self._router is not None:
            self._router.close(0)
            self._router = None

    def _on_control(self, parts: list[bytes]) -> None:
        ident = parts[0]
        try:
            if len(parts) != 2:
                raise ProtocolError("bad_multipart")
            msg = decode_control(parts[1], expect=AGENT_TO_INGEST)
        except ProtocolError as exc:
            with self._lock:
                self.invalid.append(f"control:{exc.reason}")
            return
        now = time.monotonic()
        reply = None
        with self._lock:
            self.messages.append((now, msg))
            client = msg["client_id"]
            if msg["type"] == "register":
                self.registered[client] = ident
                reply = encode_control("ack")
            elif msg["type"] == "heartbeat":
                known = self.registered.get(client) == ident
                reply = (
                    encode_control("ack")
                    if known
                    else encode_control("reregister", reason="unknown client")
                )
            elif msg["type"] == "bye" and self.registered.get(client) == ident:
                del self.registered[client]
        if reply is not None and self.answer and self._router is not None:
            self._router.send_multipart([ident, reply])

    def _on_frame(self, parts: list[bytes]) -> None:
        try:
            header, jpeg = decode_frame(parts)
        except ProtocolError as exc:
            with self._lock:
                self.invalid.append(f"frame:{exc.reason}")
            return
        with self._lock:
            self.frames.append(Received(time.monotonic(), header, len(jpeg)))
            self.last_jpeg[header.camera_id] = bytes(jpeg)

    def _run(self) -> None:
        if self._bind_frames_now:
            self._open_pull()
        self._open_router()
        self._ready.set()
        try:
            while not self._stop.is_set():
                while True:
                    try:
                        fn, args, done = self._tasks.get_nowait()
                    except queue.Empty:
                        break
                    fn(*args)
                    done.set()
                poller = zmq.Poller()
                for sock in (self._pull, self._router):
                    if sock is not None:
                        poller.register(sock, zmq.POLLIN)
                for sock, _ in poller.poll(20):
                    while True:
                        try:
                            parts = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        if sock is self._router:
                            self._on_control(parts)
                        else:
                            self._on_frame(parts)
        finally:
            for sock in (self._pull, self._router):
                if sock is not None:
                    sock.close(0)

"""The baseline the transport benchmark is measured against: the seed's design.

Agents emit Socket.IO events carrying base64-encoded JPEG inside JSON; the server
decodes each frame (as the seed did to store/inspect it), re-encodes it to base64
and broadcasts a ``distributed_frame_update`` to the dashboard clients.  Same frames,
same machine, same measurement as the Sentri path.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import socketio
from aiohttp import web


class SocketIOServer:
    """python-socketio (aiohttp) server relaying frames from agents to viewers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        sio = socketio.AsyncServer(async_mode="aiohttp", max_http_buffer_size=16 * 1024 * 1024)
        app = web.Application()
        sio.attach(app)

        @sio.on("join_dashboard")
        async def join(sid, _data=None):
            await sio.enter_room(sid, "dashboard")

        @sio.on("camera_frame")
        async def camera_frame(sid, data):
            jpeg = base64.b64decode(data["frame"])  # the seed decoded frames on the server
            self.received += 1
            await sio.emit(
                "distributed_frame_update",
                {
                    "camera_id": data["camera_id"],
                    "timestamp": data["timestamp"],
                    "frame": base64.b64encode(jpeg).decode(),
                },  # fmt: skip
                room="dashboard",
            )

        async def start() -> None:
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    def start(self) -> SocketIOServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("socket.io server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            if self._runner:
                await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        try:
            fut.result(5)
        except Exception:  # noqa: BLE001 - best-effort shutdown of a benchmark server
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class _LoopThread:
    """An asyncio loop in a thread, so the sync benchmark can drive async clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class AsyncSocketIOClient:
    """python-socketio's asyncio client (aiohttp websockets, C-accelerated framing):
    the fastest client the library offers, so the baseline is not handicapped."""

    def __init__(self, url: str, on_frame=None) -> None:
        self.lt = _LoopThread()
        self.client = socketio.AsyncClient(reconnection=False)
        if on_frame is not None:

            @self.client.on("distributed_frame_update")
            async def _frame(data):
                on_frame(data["camera_id"], data["timestamp"], base64.b64decode(data["frame"]))

        self.lt.run(self.client.connect(url, transports=["websocket"], wait_timeout=10))
        if on_frame is not None:
            self.lt.run(self.client.emit("join_dashboard", {}))

    def send_frame(self, camera_id: str, jpeg: bytes) -> None:
        payload = {"client_id": camera_id.split("/")[0], "camera_id": camera_id,
                   "timestamp": time.time_ns(), "frame": base64.b64encode(jpeg).decode()}  # fmt: skip
        self.lt.run(self.client.emit("camera_frame", payload))

    def disconnect(self) -> None:
        self.lt.run(self.client.disconnect())
        self.lt.loop.call_soon_threadsafe(self.lt.loop.stop)


def viewer(url: str, on_frame) -> AsyncSocketIOClient:
    return AsyncSocketIOClient(url, on_frame)


def agent(url: str) -> AsyncSocketIOClient:
    return AsyncSocketIOClient(url)


def send_frame(client: AsyncSocketIOClient, camera_id: str, jpeg: bytes) -> None:
    client.send_frame(camera_id, jpeg)

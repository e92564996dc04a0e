"""Commands for agents: read from the ``commands`` stream, routed to the agent.

The reader thread (``ingest-commands``) follows the stream in Redis and hands each
entry over an inproc PAIR socket to the thread that owns the ROUTER, which checks
the command and sends it on the agent's control connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgpack
import redis
import zmq

from services.ingest import metrics as m
from shared.keys import STREAM_COMMANDS
from shared.protocol import INGEST_TO_AGENT, ProtocolError, decode_control, encode_control

if TYPE_CHECKING:
    from services.ingest.control import ControlPlane
    from services.ingest.server import IngestServer

log = logging.getLogger(__name__)


class CommandRouter:
    def __init__(self, server: IngestServer, control: ControlPlane, address: str) -> None:
        self.srv = server
        self.control = control
        self.address = address

    # ------------------------------------------------------- ROUTER-owner side
    def drain(self, cmd: zmq.Socket, router: zmq.Socket) -> None:
        while True:
            try:
                raw = cmd.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.route(router, msgpack.unpackb(raw, raw=False))

    def route(self, router: zmq.Socket, fields: dict[str, str]) -> None:
        srv = self.srv
        client_id = fields.get("client_id", "")
        camera = fields.get("camera") or None
        try:
            kind = fields.get("type", "")
            msg: dict[str, Any] = {}
            if camera is not None:
                msg["camera"] = camera
            if kind == "update_streaming_settings":
                if fields.get("quality"):
                    msg["quality"] = int(float(fields["quality"]))
                if fields.get("fps"):
                    msg["fps"] = float(fields["fps"])
            data = encode_control(kind, **msg)
            decode_control(data, expect=INGEST_TO_AGENT - {"ack", "reregister"})
        except (ValueError, ProtocolError) as exc:
            m.COMMANDS.labels("invalid").inc()
            srv.count("commands_invalid")
            log.warning(
                "invalid command in stream", extra={"client_id": client_id, "error": str(exc)}
            )
            return
        session = srv.sessions.by_client(client_id)
        problem = None
        if session is None:
            problem = "client not connected"
        elif camera is not None and camera not in session.cameras:
            problem = "unknown camera"
        elif not self.control.send(router, session.routing_id, [], data, what="command"):
            problem = "send failed"
        if problem:
            m.COMMANDS.labels("undeliverable").inc()
            srv.count("commands_undeliverable")
            log.warning(
                "command not delivered",
                extra={"client_id": client_id, "command": kind, "camera": camera,
                       "problem": problem},
            )  # fmt: skip
            return
        m.COMMANDS.labels("sent").inc()
        srv.count("commands_sent")
        log.info("command sent", extra={"client_id": client_id, "command": kind, "camera": camera})

    # ------------------------------------------------------------- reader thread
    def run(self) -> None:
        srv = self.srv
        pair = srv.ctx.socket(zmq.PAIR)
        pair.setsockopt(zmq.LINGER, 0)
        pair.setsockopt(zmq.SNDTIMEO, 1000)
        pair.connect(self.address)
        stream = srv.keys.stream(STREAM_COMMANDS)
        last_id: str | None = None
        delay = 0.1
        try:
            while not srv.stop_event.is_set():
                try:
                    if last_id is None:  # "$", resolved once so nothing slips in between
                        newest = srv.redis.xrevrange(stream, count=1)
                        last_id = newest[0][0] if newest else "0-0"
                        srv.commands_ready.set()
                        log.info("reading commands", extra={"stream": stream, "from": last_id})
                    resp = srv.redis.xread({stream: last_id}, count=100, block=200)
                    delay = 0.1
                except redis.RedisError as exc:
                    ok, suppressed = srv.burst.should_log("commands_redis")
                    if ok:
                        log.warning(
                            "cannot read commands, retrying",
                            extra={"error": str(exc), "suppressed": suppressed},
                        )
                    srv.stop_event.wait(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        try:
                            pair.send(msgpack.packb(fields, use_bin_type=True))
                        except zmq.Again:
                            m.COMMANDS.labels("undeliverable").inc()
                            srv.count("commands_undeliverable")
                            log.warning("io loop busy, command dropped", extra={"id": entry_id})
        finally:
            pair.close(0)

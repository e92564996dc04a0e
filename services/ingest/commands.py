"""Commands for agents: read from the ``commands`` stream, routed to the agent.

The reader thread (``ingest-commands``) follows the stream in Redis with the
shared :class:`~shared.streams.StreamFollower` and hands each entry over an inproc
PAIR socket to the thread that owns the ROUTER, which checks
the command and sends it on the agent's control connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from services.ingest import metrics as m
from shared.keys import STREAM_COMMANDS
from shared.protocol import INGEST_TO_AGENT, ProtocolError, decode_control, encode_control
from shared.streams import StreamEntry, StreamFollower

if TYPE_CHECKING:
    from services.ingest.control import ControlPlane
    from services.ingest.server import IngestServer

log = logging.getLogger(__name__)


class CommandRouter:
    def __init__(self, server: IngestServer, control: ControlPlane, address: str) -> None:
        self.srv = server
        self.control = control
        self.address = address
        self.follower = StreamFollower(
            server.redis, {"commands": server.keys.stream(STREAM_COMMANDS)},
            count=100, block_ms=200, what="commands",
        )  # fmt: skip
        #: Set once the follower knows where the stream ends (commands from then on
        #: are routed).
        self.ready = self.follower.ready

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
        """Follow the commands stream (:class:`shared.streams.StreamFollower`: from its
        end at start-up, retried with backoff while Redis is away) and pass each entry
        to the ROUTER owner."""
        srv = self.srv
        pair = srv.ctx.socket(zmq.PAIR)
        pair.setsockopt(zmq.LINGER, 0)
        pair.setsockopt(zmq.SNDTIMEO, 1000)
        pair.connect(self.address)

        def hand_over(entry: StreamEntry) -> None:
            try:
                pair.send(msgpack.packb(entry.fields, use_bin_type=True))
            except zmq.Again:
                m.COMMANDS.labels("undeliverable").inc()
                srv.count("commands_undeliverable")
                log.warning("control loop busy, command dropped", extra={"id": entry.id})

        try:
            self.follower.run(hand_over, srv.stop_event)
        finally:
            pair.close(0)

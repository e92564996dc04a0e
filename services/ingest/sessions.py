"""Control sessions: which agent (client id) is behind which ROUTER routing id.

The table lives only in this process.  After an ingest restart it is empty, so an
agent's next heartbeat is answered with ``reregister`` and its frames are dropped
as ``unregistered`` until it registers again.  Owned by the socket thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared.protocol import make_camera_id


@dataclass
class Session:
    client_id: str
    routing_id: bytes
    info: dict[str, Any]
    cameras: dict[str, dict[str, Any]]  # local name -> validated camera info
    key: str | None = None  # CURVE public key (z85) of the agent, secure mode only
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def camera_ids(self) -> set[str]:
        return {make_camera_id(self.client_id, name) for name in self.cameras}


class SessionTable:
    def __init__(self) -> None:
        self._by_routing: dict[bytes, Session] = {}
        self._by_client: dict[str, Session] = {}
        self._camera_ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._by_client)

    def register(
        self,
        routing_id: bytes,
        info: dict[str, Any],
        cameras: list[dict[str, Any]],
        key: str | None = None,
    ) -> Session | None:
        """Start (or replace) the session of ``info['client_id']``.

        Returns the session that was replaced, if any (same client from another
        routing id, or another client that used this routing id).
        """
        client_id = info["client_id"]
        replaced = self._by_client.get(client_id)
        if replaced is not None:
            self._drop(replaced)
        other = self._by_routing.get(routing_id)
        if other is not None:
            self._drop(other)
            replaced = replaced or other
        session = Session(client_id, routing_id, info, {c["name"]: c for c in cameras}, key)
        self._by_routing[routing_id] = session
        self._by_client[client_id] = session
        self._camera_ids |= session.camera_ids
        return replaced

    def add_camera(self, session: Session, camera: dict[str, Any]) -> None:
        session.cameras[camera["name"]] = camera
        self._camera_ids.add(make_camera_id(session.client_id, camera["name"]))

    def all(self) -> list[Session]:
        return list(self._by_client.values())

    def by_routing(self, routing_id: bytes) -> Session | None:
        return self._by_routing.get(routing_id)

    def by_client(self, client_id: str) -> Session | None:
        return self._by_client.get(client_id)

    def camera_registered(self, camera_id: str) -> bool:
        return camera_id in self._camera_ids

    def end(self, session: Session) -> None:
        self._drop(session)

    def expire(self, idle_s: float, now: float | None = None) -> list[Session]:
        """End sessions without any control message for ``idle_s`` seconds."""
        now = time.monotonic() if now is None else now
        gone = [s for s in self._by_client.values() if now - s.last_seen > idle_s]
        for s in gone:
            self._drop(s)
        return gone

    def _drop(self, session: Session) -> None:
        if self._by_client.get(session.client_id) is session:
            del self._by_client[session.client_id]
        if self._by_routing.get(session.routing_id) is session:
            del self._by_routing[session.routing_id]
        self._camera_ids -= session.camera_ids

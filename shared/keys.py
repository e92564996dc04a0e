"""Redis key and stream names.  Every key lives under one prefix (``sentri:``)."""

from __future__ import annotations

from dataclasses import dataclass

# Result / integration streams (XADD with approximate MAXLEN).
STREAM_DETECTIONS = "detections"
STREAM_FACES = "faces"
STREAM_ANALYSIS = "analysis"
STREAM_EVENTS = "events"
STREAM_COMMANDS = "commands"
RESULT_STREAMS = (STREAM_DETECTIONS, STREAM_FACES, STREAM_ANALYSIS, STREAM_EVENTS)

SERVICES = ("detector", "faces", "analyst")


@dataclass(frozen=True)
class Keys:
    prefix: str = "sentri:"

    def k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- registry (written by ingest) ---------------------------------------
    @property
    def clients(self) -> str:
        """Set of known client ids."""
        return self.k("clients")

    def client(self, client_id: str) -> str:
        """Hash: client properties, last_seen, status."""
        return self.k("client", client_id)

    def client_cameras(self, client_id: str) -> str:
        """Set of camera ids belonging to a client."""
        return self.k("client_cameras", client_id)

    @property
    def cameras(self) -> str:
        """Set of every known camera id."""
        return self.k("cameras")

    def camera(self, camera_id: str) -> str:
        """Hash: camera properties and ingest stats."""
        return self.k("camera", camera_id)

    # --- processing switches and worker state -------------------------------
    def processing(self, service: str) -> str:
        """Hash camera_id -> "1"/"0": explicit per-camera processing switch of a service."""
        return self.k("processing", service)

    def members(self, service: str) -> str:
        """Sorted set replica_id -> last heartbeat (unix s)."""
        return self.k("members", service)

    def worker_stats(self, service: str) -> str:
        """Hash camera_id -> JSON stats (fps, skipped, latency) of the owning replica."""
        return self.k("worker_stats", service)

    def latest(self, stream: str, camera_id: str) -> str:
        """String: JSON of the latest record of a stream for one camera."""
        return self.k("latest", stream, camera_id)

    def snapshot(self, snapshot_id: str) -> str:
        """String (binary JPEG) with TTL: an event snapshot."""
        return self.k("snapshot", snapshot_id)

    def stream(self, name: str) -> str:
        return self.k("stream", name)

    @property
    def notify(self) -> str:
        """Pub/sub channel for change notifications (client/camera registry changes)."""
        return self.k("notify")

    # --- faces gallery --------------------------------------------------------
    @property
    def gallery(self) -> str:
        """Hash person name -> JSON {encodings: [[128 floats]...], created, ...}."""
        return self.k("gallery")

    @property
    def gallery_version(self) -> str:
        """Counter bumped on every gallery change (replicas reload their cache)."""
        return self.k("gallery", "version")

    # --- analyst -----------------------------------------------------------------
    def analyst_budget(self, day: str) -> str:
        """Counter (with TTL): analysis requests made on one UTC day, all replicas."""
        return self.k("analyst", "budget", day)

    # --- auth -----------------------------------------------------------------
    @property
    def users(self) -> str:
        return self.k("users")

    @property
    def tokens(self) -> str:
        return self.k("tokens")

    def k_auth(self, *parts: str) -> str:
        return self.k("auth", *parts)

    def session(self, sid_hash: str) -> str:
        """String (JSON, TTL): a login session, by the hash of its id."""
        return self.k_auth("session", sid_hash)

    def login_failures_ip(self, ip: str) -> str:
        """Counter (TTL): failed logins from one address."""
        return self.k_auth("fail", "ip", ip)

    def login_failures_user(self, user_hash: str) -> str:
        """Counter (TTL): failed logins for one user name (hashed)."""
        return self.k_auth("fail", "user", user_hash)

    # --- security: agent keys -----------------------------------------------
    @property
    def client_keys(self) -> str:
        """Hash client_id -> the agent public key bound to it."""
        return self.k("client_keys")

    @property
    def agent_keys(self) -> str:
        """Hash public key (z85) -> JSON {status: pending|approved|rejected, client_id, ...}."""
        return self.k("agent_keys")

    @property
    def agent_client_keys(self) -> str:
        """Hash client_id -> the agent key (z85) bound to it."""
        return self.k("client_keys")

    @property
    def agent_keys_pending(self) -> str:
        """Sorted set of pending agent keys by first-seen time (cap and expiry)."""
        return self.k("agent_keys_pending")

    def agent_key_clients(self, key: str) -> str:
        """Set of the client ids an agent key holds (the per-key limit)."""
        return self.k("agent_key_clients", key)

    # --- audit (gateway) ------------------------------------------------------
    @property
    def audit(self) -> str:
        """Stream of audit records (logins, account/token changes, decisions, toggles)."""
        return self.k("audit")

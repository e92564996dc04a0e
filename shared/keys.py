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

    # --- security: fan-out subscriber keys ------------------------------------
    @property
    def fanout_keys(self) -> str:
        """Sorted set subscriber public key (z85) -> expiry (Redis server time): the
        receivers (workers, gateway live view) ingest's CURVE fan-out accepts."""
        return self.k("fanout_keys")

    # --- audit (gateway) ------------------------------------------------------
    @property
    def audit(self) -> str:
        """Stream of audit records (logins, account/token changes, decisions, toggles)."""
        return self.k("audit")

    # --- ingest's published facts (enrolment bootstrap) -----------------------
    @property
    def ingest_info(self) -> str:
        """Hash: ingest's bound ports, bind host and public key (for the gateway)."""
        return self.k("ingest_info")

    # --- notifier -------------------------------------------------------------
    def notifier_seen(self, event_id: str) -> str:
        """String (TTL): this event was handled (duplicate suppression)."""
        return self.k("notifier", "seen", event_id)

    def notifier_occupancy(self, camera_id: str, cls: str) -> str:
        """Hash track -> last seen: objects of a class in view of a camera."""
        return self.k("notifier", "occupancy", camera_id, cls)

    def notifier_zone_occupancy(self, camera_id: str, zone: str) -> str:
        """Hash track -> last seen: objects inside a zone."""
        return self.k("notifier", "zoneocc", camera_id, zone)

    @property
    def notifier_deadletters(self) -> str:
        """List of webhook deliveries given up on (bounded)."""
        return self.k("notifier", "deadletters")

    @property
    def notifier_webhooks(self) -> str:
        """Hash name -> webhook config added in the dashboard."""
        return self.k("notifier", "webhooks")

    @property
    def notifier_webhooks_version(self) -> str:
        """Counter bumped on every webhook change (notifiers reload)."""
        return self.k("notifier", "webhooks", "version")

    @property
    def notifier_webhooks_static(self) -> str:
        """Set of webhook names that come from the config file."""
        return self.k("notifier", "webhooks", "static")

    def notifier_webhook_queue(self, name: str) -> tuple[str, str]:
        """(sorted set delivery id -> due time, hash delivery id -> JSON) of one webhook."""
        return self.k("notifier", "webhook", name, "due"), self.k(
            "notifier", "webhook", name, "items"
        )

    # --- rules (zones, lines, counters) ---------------------------------------
    @property
    def rules(self) -> str:
        """Hash camera_id -> JSON {zones, lines}."""
        return self.k("rules")

    @property
    def rules_version(self) -> str:
        """Counter bumped on every rules change (detectors reload)."""
        return self.k("rules", "version")

    def rules_counts(self, camera_id: str, day: str) -> str:
        """Hash "line|direction|minute" -> crossings of one camera on one day."""
        return self.k("rules", "counts", camera_id, day)

    def rules_totals(self, camera_id: str) -> str:
        """Hash "line|direction" -> all-time crossings of one camera."""
        return self.k("rules", "totals", camera_id)

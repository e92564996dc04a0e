"""Agent <-> ingest security: CURVE key pairs, the agent key registry, ZAP auth.

* Ingest has a server key pair (state dir); agents have their own key pairs.
* Every connection is authenticated by a ZAP handler (pyzmq's authenticator thread
  with a callback) backed by Redis: an unknown key is recorded as **pending** (with
  its fingerprint, visible in the dashboard/API) and refused; an admin approves or
  rejects it.  An approved agent's next reconnect succeeds: no restart needed.
* The ZAP handler sets the message User-Id to the key (z85), so ingest can check that
  a ``client_id`` is bound to the key that first registered it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from shared.keys import Keys

if TYPE_CHECKING:  # the edge agent uses the key functions without a Redis client installed
    import redis

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "rejected")
ZAP_DOMAIN = "sentri"


# ------------------------------------------------------------------- key pairs


def generate_keypair() -> tuple[str, str]:
    public, secret = zmq.curve_keypair()
    return public.decode(), secret.decode()


def write_keypair(directory: str | os.PathLike[str], name: str) -> tuple[str, str]:
    """Create ``<name>.public`` and ``<name>.secret`` (mode 0600) in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = generate_keypair()
    pub_path, sec_path = d / f"{name}.public", d / f"{name}.secret"
    fd = os.open(sec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    pub_path.write_text(public + "\n")
    return public, secret


def load_or_create_keypair(directory: str | os.PathLike[str], name: str) -> tuple[str, str]:
    d = Path(directory)
    pub_path, sec_path = d / f"{name}.public", d / f"{name}.secret"
    if pub_path.exists() and sec_path.exists():
        return pub_path.read_text().strip(), sec_path.read_text().strip()
    log.info("generating CURVE key pair", extra={"path": str(pub_path)})
    return write_keypair(d, name)


def read_public_key(value_or_path: str) -> str:
    """A z85 public key given inline (40 chars) or as a path to a ``.public`` file."""
    v = value_or_path.strip()
    if len(v) == 40 and not os.path.exists(v):
        return v
    key = Path(v).expanduser().read_text().strip()
    if len(key) != 40:
        raise ValueError(f"{v}: not a CURVE public key (expected 40 z85 characters)")
    return key


def fingerprint(public_z85: str) -> str:
    """Short human-comparable fingerprint: SHA-256 of the key, 8 groups of 4 hex."""
    h = hashlib.sha256(public_z85.encode()).hexdigest()[:32]
    return ":".join(h[i : i + 4] for i in range(0, 32, 4))


def server_socket_options(sock: zmq.Socket, public: str, secret: str) -> None:
    sock.curve_server = True
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.zap_domain = ZAP_DOMAIN.encode()


def client_socket_options(sock: zmq.Socket, public: str, secret: str, server_public: str) -> None:
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.curve_serverkey = server_public.encode()


# ------------------------------------------------------------- agent key store


class AgentKeyStore:
    """Agent keys in Redis: hash ``agent_keys`` key -> JSON record, and the binding
    client_id -> key in hash ``client_keys``."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.hash = keys.agent_keys
        self.bindings = keys.k("client_keys")
        self.notify_channel = keys.notify

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.hash, key)
        if raw is None:
            return None
        return json.loads(raw)

    def status(self, key: str) -> str | None:
        rec = self.get(key)
        return rec["status"] if rec else None

    def _put(self, key: str, rec: dict[str, Any]) -> None:
        self.r.hset(self.hash, key, json.dumps(rec))

    def note_pending(self, key: str, **info: Any) -> dict[str, Any]:
        """Record an unknown key as pending (idempotent); returns its record."""
        now = time.time()
        rec = {"key": key, "fingerprint": fingerprint(key), "status": "pending",
               "first_seen": now, "last_seen": now, **info}  # fmt: skip
        if self.r.hsetnx(self.hash, key, json.dumps(rec)):
            self.r.publish(self.notify_channel, json.dumps(
                {"type": "agent_key_pending", "fingerprint": rec["fingerprint"]}))  # fmt: skip
            log.warning(
                "unknown agent key is pending approval", extra={"fingerprint": rec["fingerprint"]}
            )
            return rec
        existing = self.get(key) or rec
        existing["last_seen"] = now
        self._put(key, existing)
        return existing

    def set_status(self, key_or_fp: str, status: str, **info: Any) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        key = self.resolve(key_or_fp)
        if key is None:
            raise KeyError(key_or_fp)
        rec = self.get(key) or {
            "key": key,
            "fingerprint": fingerprint(key),
            "first_seen": time.time(),
        }
        rec.update(status=status, decided_at=time.time(), **info)
        self._put(key, rec)
        if status != "approved":
            # A rejected key loses its client_id bindings.
            for cid, bound in self.r.hgetall(self.bindings).items():
                if bound == key:
                    self.r.hdel(self.bindings, cid)
        return rec

    def approve(self, key_or_fp: str, **info: Any) -> dict[str, Any]:
        return self.set_status(key_or_fp, "approved", **info)

    def reject(self, key_or_fp: str) -> dict[str, Any]:
        return self.set_status(key_or_fp, "rejected")

    def resolve(self, key_or_fp: str) -> str | None:
        """A key from itself or from its fingerprint."""
        if self.r.hexists(self.hash, key_or_fp):
            return key_or_fp
        for key, raw in self.r.hgetall(self.hash).items():
            if json.loads(raw).get("fingerprint") == key_or_fp:
                return key
        if len(key_or_fp) == 40:
            return key_or_fp  # approving a key before it ever connected
        return None

    def list(self) -> list[dict[str, Any]]:
        out = []
        bindings = self.r.hgetall(self.bindings)
        for key, raw in self.r.hgetall(self.hash).items():
            rec = json.loads(raw)
            rec["client_ids"] = sorted(c for c, k in bindings.items() if k == key)
            out.append(rec)
        return sorted(out, key=lambda x: x.get("first_seen", 0))

    def bind_client(self, client_id: str, key: str) -> bool:
        """Bind ``client_id`` to ``key`` on first use; False if another key holds it."""
        if self.r.hsetnx(self.bindings, client_id, key):
            return True
        return self.r.hget(self.bindings, client_id) == key

    def key_for_client(self, client_id: str) -> str | None:
        return self.r.hget(self.bindings, client_id)


class _KeyCallback:
    """pyzmq authenticator credentials provider: allow approved keys, note unknown."""

    def __init__(self, store: AgentKeyStore, cache_s: float = 1.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        k = key.decode() if isinstance(key, bytes) else key
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(k)
            if hit and hit[1] and now - hit[0] < self.cache_s:
                return True  # only approvals are cached: an approval applies at once
        import redis

        try:
            status = self.store.status(k)
            if status is None:
                self.store.note_pending(k)
                status = "pending"
        except redis.RedisError as exc:
            log.warning("agent key check failed (redis)", extra={"error": str(exc)})
            with self._lock:
                hit = self._cache.get(k)
            return bool(hit and hit[1])  # keep known-good agents through a Redis blip
        ok = status == "approved"
        with self._lock:
            self._cache[k] = (now, ok)
            if not ok:
                self.denied += 1
        return ok


class CurveAuthenticator:
    """Runs pyzmq's ZAP authenticator thread on ``ctx`` with the Redis-backed callback."""

    def __init__(self, ctx: zmq.Context, store: AgentKeyStore) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        self.provider = _KeyCallback(store)
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("sentri.zap"))
        self.auth.start()
        self.auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self.provider)

    def stop(self) -> None:
        self.auth.stop()

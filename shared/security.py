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
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from shared.keys import Keys

if TYPE_CHECKING:  # the edge agent uses the key functions without a Redis client installed
    import redis

log = logging.getLogger(__name__)

STATUSES = ("pending", "approved", "rejected")
ZAP_DOMAIN = "sentri"
#: The ZAP domain of ingest's frame fan-out (PUB): subscriber keys, not agent keys.
FANOUT_ZAP_DOMAIN = "sentri-fanout"


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


def server_socket_options(
    sock: zmq.Socket, public: str, secret: str, *, domain: str = ZAP_DOMAIN
) -> None:
    sock.curve_server = True
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.zap_domain = domain.encode()


def client_socket_options(sock: zmq.Socket, public: str, secret: str, server_public: str) -> None:
    sock.curve_publickey = public.encode()
    sock.curve_secretkey = secret.encode()
    sock.curve_serverkey = server_public.encode()


# ------------------------------------------------------------- agent key store

#: Bind a client id to a key unless another key holds it or the key is at its limit.
#: KEYS: bindings hash, the key's client set; ARGV: client_id, key, limit.
#: Returns 1 (bound, or already bound to this key), 0 (another key holds it),
#: -1 (this key already holds ``limit`` client ids).
_BIND_CLIENT = """
local bound = redis.call('HGET', KEYS[1], ARGV[1])
if bound == ARGV[2] then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
if bound then return 0 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""


class ClientLimitReached(Exception):
    """The key already holds as many client ids as ``clients_per_key`` allows."""


class AgentKeyStore:
    """Agent keys in Redis: hash ``agent_keys`` key -> JSON record, the binding
    client_id -> key in hash ``client_keys``, each key's client ids in a set (the
    per-key limit), and pending keys by first-seen time in a sorted set (cap, expiry).
    """

    def __init__(self, r: redis.Redis, keys: Keys, *, clients_per_key: int = 1) -> None:
        self.r = r
        self.keys = keys
        self.hash = keys.agent_keys
        self.bindings = keys.agent_client_keys
        self.pending_index = keys.agent_keys_pending
        self.notify_channel = keys.notify
        self.clients_per_key = clients_per_key

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.r.hget(self.hash, key)
        if raw is None:
            return None
        return json.loads(raw)

    def status(self, key: str) -> str | None:
        rec = self.get(key)
        return rec["status"] if rec else None

    def records(self) -> dict[str, dict[str, Any]]:
        """Every key's record (one HGETALL; the pending caps bound its size)."""
        out = {}
        for key, raw in self.r.hgetall(self.hash).items():
            try:
                out[key] = json.loads(raw)
            except ValueError:
                continue
        return out

    def _put(self, key: str, rec: dict[str, Any]) -> None:
        self.r.hset(self.hash, key, json.dumps(rec))

    def note_pending(
        self, key: str, *, max_pending: int | None = None, announce: bool = True, **info: Any
    ) -> dict[str, Any] | None:
        """Record an unknown key as pending (idempotent); returns its record.

        Returns None, recording nothing, when ``max_pending`` keys are pending already.
        A new key is announced to dashboards unless ``announce`` is false (ingest
        announces its new keys in coalesced batches, :meth:`announce_pending`).
        """
        now = time.time()
        existing = self.get(key)
        if existing is not None:
            existing["last_seen"] = now
            self._put(key, existing)
            return existing
        if max_pending is not None and self.r.zcard(self.pending_index) >= max_pending:
            return None
        rec = {"key": key, "fingerprint": fingerprint(key), "status": "pending",
               "first_seen": now, "last_seen": now, **info}  # fmt: skip
        if self.r.hsetnx(self.hash, key, json.dumps(rec)):
            self.r.zadd(self.pending_index, {key: now})
            if announce:
                self.announce_pending([rec["fingerprint"]], count=False)
            log.warning(
                "unknown agent key is pending approval",
                extra={"fingerprint": rec["fingerprint"], "source": info.get("source")},
            )
            return rec
        return self.get(key)

    def touch_pending(self, key: str) -> None:
        """Update a pending key's ``last_seen`` (the agent is still trying)."""
        rec = self.get(key)
        if rec is not None and rec.get("status") == "pending":
            rec["last_seen"] = time.time()
            self._put(key, rec)

    def announce_pending(self, fingerprints: list[str], *, count: bool = True) -> None:
        """One dashboard notice for a batch of new pending keys (the newest named)."""
        if fingerprints:
            notice: dict[str, Any] = {"type": "agent_key_pending", "fingerprint": fingerprints[-1]}
            if count:
                notice["count"] = len(fingerprints)
            self.r.publish(self.notify_channel, json.dumps(notice))

    def expire_pending(self, ttl_s: float, now: float | None = None) -> list[str]:
        """Forget pending keys first seen more than ``ttl_s`` ago and never decided."""
        cutoff = (now or time.time()) - ttl_s
        old = self.r.zrangebyscore(self.pending_index, "-inf", cutoff, start=0, num=1000)
        gone = []
        for key in old:
            rec = self.get(key)
            if rec is None or rec.get("status") == "pending":
                self.r.hdel(self.hash, key)
                gone.append(key)
            self.r.zrem(self.pending_index, key)
        if gone:
            log.info("expired undecided agent keys", extra={"count": len(gone), "ttl_s": ttl_s})
        return gone

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
        if status == "pending":
            self.r.zadd(self.pending_index, {key: rec.get("first_seen") or time.time()})
        else:
            self.r.zrem(self.pending_index, key)
        if status != "approved":
            self.unbind_key(key)  # a rejected key loses its client_id bindings
        return rec

    def approve(self, key_or_fp: str, **info: Any) -> dict[str, Any]:
        return self.set_status(key_or_fp, "approved", **info)

    def reject(self, key_or_fp: str) -> dict[str, Any]:
        return self.set_status(key_or_fp, "rejected")

    def delete(self, key_or_fp: str) -> dict[str, Any] | None:
        """Forget a key entirely (record, pending entry, bindings); returns its record.

        A deleted key that connects again is an unknown key: pending, refused.
        """
        key = self.resolve(key_or_fp)
        rec = self.get(key) if key else None
        if key is None or rec is None:
            return None
        self.unbind_key(key)
        pipe = self.r.pipeline()
        pipe.hdel(self.hash, key)
        pipe.zrem(self.pending_index, key)
        pipe.execute()
        return rec

    def unbind_key(self, key: str) -> list[str]:
        """Release every client id bound to ``key``; returns them."""
        freed = [cid for cid, bound in self.r.hgetall(self.bindings).items() if bound == key]
        pipe = self.r.pipeline()
        for cid in freed:
            pipe.hdel(self.bindings, cid)
        pipe.delete(self.keys.agent_key_clients(key))
        pipe.execute()
        return freed

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
        """Bind ``client_id`` to ``key`` on first use; False if another key holds it.

        Raises :class:`ClientLimitReached` when the key already holds
        ``clients_per_key`` other client ids.
        """
        res = self.r.eval(
            _BIND_CLIENT, 2, self.bindings, self.keys.agent_key_clients(key),
            client_id, key, self.clients_per_key,
        )  # fmt: skip
        if int(res) < 0:
            raise ClientLimitReached(f"key holds {self.clients_per_key} client id(s) already")
        return int(res) == 1

    def key_for_client(self, client_id: str) -> str | None:
        return self.r.hget(self.bindings, client_id)


class _TokenBucket:
    def __init__(self, per_minute: float, burst: float) -> None:
        self.rate = per_minute / 60.0
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


_LOOKED_UP_MAX = 10_000


class _KeyCallback:
    """pyzmq authenticator credentials provider, answering from memory.

    Statuses come from a snapshot of the key store that :meth:`refresh` re-reads
    off the ZAP thread.  An approved key in the snapshot passes without a Redis
    call (so known agents reconnect while Redis is down or stalled).  Any other key
    gets one fresh look in Redis (an approval counts at once) unless Redis is known
    to be failing: then it is refused (fail closed).  Unknown keys are queued to be
    recorded as pending by :meth:`flush_pending`, within caps per source and in
    total, and refused.
    """

    def __init__(
        self,
        store: AgentKeyStore,
        cache_s: float = 1.0,
        *,
        pending_max: int = 200,
        pending_per_source: int = 5,
        pending_per_minute: int = 30,
        down_backoff_s: float = 2.0,
    ) -> None:
        self.store = store
        self.cache_s = cache_s
        self.pending_max = pending_max
        self.pending_per_source = pending_per_source
        self.down_backoff_s = down_backoff_s
        self._status: dict[str, str] = {}
        self._pending_by_source: dict[str, int] = {}
        self._pending_total = 0
        self._queue: deque[tuple[str, str | None]] = deque()
        self._queued: set[str] = set()
        self._touch: set[str] = set()  # pending keys seen again (last_seen to update)
        self._total_rate = _TokenBucket(pending_per_minute, max(1, pending_per_minute // 6))
        self._source_rate: dict[str, _TokenBucket] = {}
        self._down_until = 0.0
        # Statuses looked up one by one, with when: a snapshot read before a lookup
        # must not overwrite it (an approval seen by a handshake would be undone and
        # the new agent's session revoked by a stale refresh).
        self._looked_up: dict[str, float] = {}
        self._lock = threading.Lock()
        #: The peer address of the handshake being decided (set by the authenticator).
        self.source: str | None = None
        self.denied = 0
        self.refused_pending: dict[str, int] = {"total": 0, "per_source": 0, "rate": 0}
        self.unavailable = 0

    # ------------------------------------------------------------- ZAP thread
    def callback(self, domain: str, key: bytes) -> bool:
        k = key.decode() if isinstance(key, bytes) else key
        now = time.monotonic()
        with self._lock:
            if self._status.get(k) == "approved":
                return True
            down = now < self._down_until
        if down:  # fail closed: no decision for a key we cannot look up
            self._deny(unavailable=True)
            return False
        import redis

        try:
            status = self.store.status(k)
        except redis.RedisError as exc:
            with self._lock:
                self._down_until = now + self.down_backoff_s
            log.warning("agent key check failed (redis): refused", extra={"error": str(exc)})
            self._deny(unavailable=True)
            return False
        with self._lock:
            if len(self._looked_up) >= _LOOKED_UP_MAX:
                self._looked_up.clear()  # bounded; costs only the stale-refresh guard
            self._looked_up[k] = time.monotonic()  # after the read: ties keep the lookup
            if status is not None:
                self._status[k] = status
                if status == "pending" and len(self._touch) < self.pending_max:
                    self._touch.add(k)  # its last_seen, written off this thread
            else:
                self._queue_pending(k, self.source, now)
        if status == "approved":
            return True
        self._deny()
        return False

    def _deny(self, unavailable: bool = False) -> None:
        with self._lock:
            self.denied += 1
            if unavailable:
                self.unavailable += 1

    def _queue_pending(self, key: str, source: str | None, now: float) -> None:
        """Under the lock: queue an unknown key to be recorded, within the caps."""
        if key in self._queued:
            return
        src = source or "unknown"
        reason = None
        if self._pending_total >= self.pending_max:
            reason = "total"
        elif self._pending_by_source.get(src, 0) >= self.pending_per_source:
            reason = "per_source"
        else:
            bucket = self._source_rate.get(src)
            if bucket is None:
                if len(self._source_rate) > 10_000:
                    self._source_rate.clear()  # bounded: forget old sources
                bucket = self._source_rate[src] = _TokenBucket(
                    self.pending_per_source, self.pending_per_source
                )
            if not bucket.take(now) or not self._total_rate.take(now):
                reason = "rate"
        if reason is not None:
            self.refused_pending[reason] += 1
            return
        self._queue.append((key, src))
        self._queued.add(key)
        self._pending_total += 1
        self._pending_by_source[src] = self._pending_by_source.get(src, 0) + 1

    # ---------------------------------------------------------- refresher thread
    def refresh(self) -> None:
        """Re-read every key's status (raises ``redis.RedisError``)."""
        import redis

        started = time.monotonic()
        try:
            records = self.store.records()
        except redis.RedisError:
            with self._lock:
                self._down_until = time.monotonic() + self.down_backoff_s
            raise
        by_source: dict[str, int] = {}
        pending = 0
        for rec in records.values():
            if rec.get("status") == "pending":
                pending += 1
                src = str(rec.get("source") or "unknown")
                by_source[src] = by_source.get(src, 0) + 1
        with self._lock:
            status = {k: str(rec.get("status")) for k, rec in records.items()}
            # A key looked up after this read began is newer than the read: keep it.
            fresh = {k: t for k, t in self._looked_up.items() if t >= started}
            for k in fresh:
                if k in self._status:
                    status[k] = self._status[k]
                else:
                    status.pop(k, None)
            self._status, self._looked_up = status, fresh
            for _key, src in self._queue:  # queued, not yet written
                pending += 1
                by_source[src or "unknown"] = by_source.get(src or "unknown", 0) + 1
            self._pending_total = pending
            self._pending_by_source = by_source
            self._down_until = 0.0

    def flush_pending(self) -> list[str]:
        """Record the queued unknown keys as pending (and the last_seen of pending
        keys seen again); returns the fingerprints of the new ones."""
        with self._lock:
            touch, self._touch = self._touch, set()
        for key in touch:
            self.store.touch_pending(key)
        new = []
        while True:
            with self._lock:
                if not self._queue:
                    return new
                key, src = self._queue[0]
            rec = self.store.note_pending(
                key, max_pending=self.pending_max, announce=False, source=src
            )
            with self._lock:
                self._queue.popleft()
                self._queued.discard(key)
            if rec is not None and rec.get("first_seen") == rec.get("last_seen"):
                new.append(rec["fingerprint"])

    def approved(self, key: str | None) -> bool:
        """The snapshot's word on ``key`` (no Redis call)."""
        with self._lock:
            return key is not None and self._status.get(key) == "approved"

    def known(self) -> dict[str, str]:
        with self._lock:
            return dict(self._status)


class CurveAuthenticator:
    """pyzmq's ZAP authenticator thread on ``ctx``, deciding from a key cache, and a
    refresher thread (``sentri-keys``) that keeps that cache current, records pending
    keys within their caps, coalesces the dashboard notices and expires pending keys
    never decided."""

    def __init__(
        self,
        ctx: zmq.Context,
        store: AgentKeyStore,
        *,
        refresh_s: float = 1.0,
        pending_max: int = 200,
        pending_per_source: int = 5,
        pending_per_minute: int = 30,
        pending_ttl_s: float = 86_400.0,
        notice_s: float = 2.0,
    ) -> None:
        from zmq.auth.thread import ThreadAuthenticator

        provider = self.provider = _KeyCallback(
            store, pending_max=pending_max, pending_per_source=pending_per_source,
            pending_per_minute=pending_per_minute,
        )  # fmt: skip

        class _Auth(ThreadAuthenticator):
            async def handle_zap_message(self, msg: list[bytes]) -> None:
                provider.source = msg[3].decode("utf-8", "replace") if len(msg) > 3 else None
                await super().handle_zap_message(msg)

        self.store = store
        self.refresh_s = refresh_s
        self.pending_ttl_s = pending_ttl_s
        self.notice_s = notice_s
        self.errors = 0
        #: Called with the statuses after every successful refresh (ingest unbinds).
        self.on_refresh: list[Any] = []
        try:
            provider.refresh()
        except Exception as exc:  # Redis down at start: keys are looked up one by one
            log.warning("agent keys not loaded yet", extra={"error": str(exc)})
        self.auth = _Auth(ctx, log=logging.getLogger("sentri.zap"))
        self.auth.start()
        self.auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=provider)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentri-keys", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import redis

        fresh: list[str] = []
        last_notice = 0.0
        next_expiry = 0.0
        while not self._stop.wait(min(self.refresh_s, self.notice_s)):
            try:
                fresh += self.provider.flush_pending()
                now = time.monotonic()
                if fresh and now - last_notice >= self.notice_s:
                    self.store.announce_pending(fresh)
                    fresh, last_notice = [], now
                if now >= next_expiry:
                    self.store.expire_pending(self.pending_ttl_s)
                    next_expiry = now + min(60.0, self.pending_ttl_s / 10)
                self.provider.refresh()
                statuses = self.provider.known()
                for hook in list(self.on_refresh):
                    hook(statuses)
            except redis.RedisError as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning(
                        "agent key refresh failed (redis)",
                        extra={"error": str(exc), "failures": self.errors},
                    )
            except Exception:
                log.exception("agent key refresh failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.auth.stop()


# ------------------------------------------------------ fan-out subscriber keys

# Registration and validity use the Redis server's clock (TIME inside the script), like
# worker membership: no receiver's wall clock decides whether its key is valid.
_SUB_REGISTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
"""
_SUB_VALID = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""
_SUB_IS_VALID = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) >= now then return 1 end
return 0
"""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class SubscriberKeyStore:
    """The fan-out receivers' public keys in Redis (sorted set ``fanout_keys``, key ->
    expiry by the Redis server's clock).

    Each receiver process makes an ephemeral key pair at start and registers its
    public key with a TTL it keeps refreshing (:class:`shared.fanout.FanoutKeys`); a
    key that stops being refreshed expires.  Redis is inside the trust boundary (whoever
    writes it can already approve agents), so a registered key is a provisioned one.
    """

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r = r
        self.key = keys.fanout_keys

    def register(self, public: str, ttl_s: float) -> None:
        self.r.eval(_SUB_REGISTER, 1, self.key, public, repr(float(ttl_s)))

    def unregister(self, public: str) -> None:
        self.r.zrem(self.key, public)

    def valid(self) -> set[str]:
        """Every registered key not yet expired."""
        return {_text(k) for k in self.r.eval(_SUB_VALID, 1, self.key)}

    def is_valid(self, public: str) -> bool:
        return int(self.r.eval(_SUB_IS_VALID, 1, self.key, public)) == 1


class _SubscriberKeyCallback:
    """Fan-out ZAP decisions from a snapshot of the registered subscriber keys.

    A key in the snapshot passes without a Redis call.  A key not in it gets one
    direct lookup (so a receiver that registered a moment ago is not refused for a
    refresh period), within a rate limit (a stranger trying random keys cannot turn
    the ZAP thread into a Redis load generator) and unless Redis is known to be
    failing (fail closed).  Every refusal is counted.
    """

    def __init__(
        self,
        store: SubscriberKeyStore,
        *,
        lookups_per_minute: int = 600,
        down_backoff_s: float = 2.0,
    ) -> None:
        self.store = store
        self.down_backoff_s = down_backoff_s
        self._valid: frozenset[str] = frozenset()
        self._lookups = _TokenBucket(lookups_per_minute, max(1, lookups_per_minute // 10))
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.allowed = 0
        #: Refusals: unknown key, Redis unavailable, lookups over the rate limit.
        self.refused: dict[str, int] = {"unknown": 0, "unavailable": 0, "rate": 0}

    @property
    def denied(self) -> int:
        with self._lock:
            return sum(self.refused.values())

    def _refuse(self, reason: str) -> bool:
        with self._lock:
            self.refused[reason] += 1
            n = self.refused[reason]
        if n == 1 or n % 100 == 0:
            log.warning("fan-out subscriber refused", extra={"reason": reason, "count": n})
        return False

    def callback(self, domain: str, key: bytes) -> bool:
        k = _text(key)
        now = time.monotonic()
        with self._lock:
            if k in self._valid:
                self.allowed += 1
                return True
            down = now < self._down_until
            limited = not down and not self._lookups.take(now)
        if down:
            return self._refuse("unavailable")
        if limited:
            return self._refuse("rate")
        import redis

        try:
            ok = self.store.is_valid(k)
        except redis.RedisError as exc:
            with self._lock:
                self._down_until = now + self.down_backoff_s
            log.warning("fan-out key check failed (redis): refused", extra={"error": str(exc)})
            return self._refuse("unavailable")
        if not ok:
            return self._refuse("unknown")
        with self._lock:
            self._valid = self._valid | {k}
            self.allowed += 1
        return True

    def refresh(self) -> None:
        """Re-read the registered keys (raises ``redis.RedisError``)."""
        import redis

        try:
            valid = frozenset(self.store.valid())
        except redis.RedisError:
            with self._lock:
                self._down_until = time.monotonic() + self.down_backoff_s
            raise
        with self._lock:
            self._valid = valid
            self._down_until = 0.0


class FanoutAuthenticator:
    """ZAP decisions for ingest's fan-out (domain :data:`FANOUT_ZAP_DOMAIN`): registered
    subscriber keys pass, everything else is refused and counted.

    A context has one ZAP handler: when ingest already runs the agents'
    :class:`CurveAuthenticator` on ``ctx`` the fan-out domain is added to it
    (``zap``), otherwise (``ingest.insecure`` with ``ingest.fanout_curve: on``) a
    handler of its own is started.  A refresher thread (``sentri-fanout-keys``) keeps
    the key snapshot current.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        store: SubscriberKeyStore,
        *,
        refresh_s: float = 1.0,
        zap: CurveAuthenticator | None = None,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.provider = _SubscriberKeyCallback(store)
        self.errors = 0
        try:
            self.provider.refresh()
        except Exception as exc:  # Redis down at start: keys are looked up one by one
            log.warning("fan-out subscriber keys not loaded yet", extra={"error": str(exc)})
        self._own_auth = None
        if zap is not None:
            zap.auth.configure_curve_callback(
                domain=FANOUT_ZAP_DOMAIN, credentials_provider=self.provider
            )
        else:
            from zmq.auth.thread import ThreadAuthenticator

            self._own_auth = ThreadAuthenticator(ctx, log=logging.getLogger("sentri.zap"))
            self._own_auth.start()
            self._own_auth.configure_curve_callback(
                domain=FANOUT_ZAP_DOMAIN, credentials_provider=self.provider
            )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sentri-fanout-keys", daemon=True)
        self._thread.start()

    @property
    def denied(self) -> int:
        return self.provider.denied

    def _loop(self) -> None:
        import redis

        while not self._stop.wait(self.refresh_s):
            try:
                self.provider.refresh()
            except redis.RedisError as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 100 == 0:
                    log.warning(
                        "fan-out key refresh failed (redis)",
                        extra={"error": str(exc), "failures": self.errors},
                    )
            except Exception:
                log.exception("fan-out key refresh failed")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self._own_auth is not None:
            self._own_auth.stop()

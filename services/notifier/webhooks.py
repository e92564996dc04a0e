"""Signed webhooks: address checks, the durable delivery queue, retries, dead letters.

Each POST carries the event JSON and three headers::

    X-Sentri-Timestamp: 1767225600            # unix seconds when signed
    X-Sentri-Signature: v1=<hex>              # HMAC-SHA256(secret, f"{timestamp}.{body}")
    X-Sentri-Event-Id: 3f2a…                  # the event's id: dedupe on it

Deliveries wait in Redis (a sorted set of due times + a hash of payloads per
target), so a notifier restart loses nothing.  A failed delivery is retried with
exponential backoff; while a target is down the whole target waits (one probe per
backoff step, not one per event).  After ``max_attempts`` (or at once on a 4xx other
than 408/429) the delivery goes to the dead-letter list, visible in the API.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from services.notifier import metrics
from services.notifier.config import WebhookConfig
from shared.keys import Keys
from shared.logs import BurstLimiter

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Sentri-Signature"
TIMESTAMP_HEADER = "X-Sentri-Timestamp"
EVENT_ID_HEADER = "X-Sentri-Event-Id"

#: Cloud instance metadata endpoints (besides all of link-local).
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("168.63.129.16"),  # Azure wire server
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
}
METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *,
           now: float | None = None, window_s: float = 300.0) -> bool:  # fmt: skip
    """What a receiver does (see docs/rules.md): fresh timestamp and matching HMAC."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > window_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def address_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is link-local"
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a unicast address"
    return None


def literal_address_refused(url: str, allow_internal: bool) -> str | None:
    """Why ``url`` is refused without resolving it (literal IPs, metadata host names)."""
    if allow_internal:
        return None
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host in METADATA_HOSTS:
        return f"{host} is a cloud metadata host"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_refused(ip)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (raises ``OSError``)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [info[4][0].split("%", 1)[0] for info in infos]


class AddressRefused(Exception):
    """The target's address is one webhooks may not reach (see :func:`address_refused`)."""


@dataclass(frozen=True)
class Pinned:
    """Where one delivery goes: the URL with the host replaced by the address that was
    checked, and what keeps the request addressed to the host (``Host``, TLS SNI and
    certificate name)."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def pin(
    url: str, allow_internal: bool, resolver: Callable[[str, int], list[str]] = resolve
) -> Pinned:
    """Resolve ``url``'s host once, check every address, and connect to a checked one.

    Checking the name and letting the HTTP client resolve it again would leave a gap
    (DNS rebinding: a name that answers with a public address for the check and with
    a metadata or link-local address for the request).  Raises :class:`AddressRefused`
    or ``OSError`` (unresolvable: retried like any outage).
    """
    why = literal_address_refused(url, allow_internal)
    if why:
        raise AddressRefused(why)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow_internal:
        return Pinned(url, {}, {})
    try:
        ipaddress.ip_address(host)
        return Pinned(url, {}, {})  # a literal address, checked above
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for addr in addresses:
        why = address_refused(ipaddress.ip_address(addr))
        if why:
            raise AddressRefused(f"{host} resolves to {why}")
    ip = ipaddress.ip_address(addresses[0])
    literal = f"[{ip}]" if ip.version == 6 else str(ip)
    userinfo, _, host_header = parts.netloc.rpartition("@")
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    netloc = f"{userinfo}@{netloc}" if userinfo else netloc  # basic auth kept
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    return Pinned(parts._replace(netloc=netloc).geturl(), {"Host": host_header}, extensions)


class DeadLetters:
    """Deliveries given up on: a bounded Redis list, newest first."""

    def __init__(self, r: redis.Redis, keys: Keys, max_len: int = 1000) -> None:
        self.r, self.key, self.max_len = r, keys.notifier_deadletters, max_len

    def add(self, entry: dict[str, Any], pipe: Any = None) -> None:
        """Record ``entry``; with ``pipe`` (a transaction) only queue the commands."""
        own = pipe is None
        pipe = self.r.pipeline() if own else pipe
        pipe.lpush(self.key, json.dumps(entry, separators=(",", ":")))
        pipe.ltrim(self.key, 0, self.max_len - 1)
        if own:
            pipe.execute()

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for raw in self.r.lrange(self.key, 0, max(0, limit - 1)):
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out

    def pop(self, dead_id: str) -> dict[str, Any] | None:
        """Remove one dead letter by id and return it (None if absent)."""
        for raw in self.r.lrange(self.key, 0, -1):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("id") == dead_id and self.r.lrem(self.key, 1, raw):
                return entry
        return None

    def clear(self) -> int:
        n = int(self.r.llen(self.key))
        self.r.delete(self.key)
        return n


class WebhookStore:
    """Webhooks added in the dashboard (hash name -> WebhookConfig JSON, secret included),
    a version counter the notifier watches, and the names of the config file's webhooks
    (written by the notifier, shown read-only)."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys
        self.hash = keys.notifier_webhooks
        self.version_key = keys.notifier_webhooks_version
        self.static_key = keys.notifier_webhooks_static

    def version(self) -> int:
        return int(self.r.get(self.version_key) or 0)

    def list(self) -> list[WebhookConfig]:
        out = []
        for name, raw in sorted(self.r.hgetall(self.hash).items()):
            try:
                out.append(WebhookConfig.model_validate_json(raw))
            except ValueError:
                log.warning("invalid webhook in redis ignored", extra={"webhook": name})
        return out

    def get(self, name: str) -> WebhookConfig | None:
        raw = self.r.hget(self.hash, name)
        return WebhookConfig.model_validate_json(raw) if raw else None

    def put(self, cfg: WebhookConfig) -> None:
        data = cfg.model_dump(mode="json")
        data["secret"] = cfg.secret.get_secret_value()
        pipe = self.r.pipeline()
        pipe.hset(self.hash, cfg.name, json.dumps(data))
        pipe.incr(self.version_key)
        pipe.execute()

    def delete(self, name: str) -> bool:
        due, items = queue_keys(self.keys, name)
        pipe = self.r.pipeline()
        pipe.hdel(self.hash, name)
        pipe.delete(due, items)
        pipe.incr(self.version_key)
        return bool(pipe.execute()[0])

    def set_static(self, webhooks: list[WebhookConfig]) -> None:
        names = [w.name for w in webhooks]
        self.r.set(self.static_key, json.dumps(names))

    def static(self) -> list[str]:
        raw = self.r.get(self.static_key)
        return json.loads(raw) if raw else []

    def requeue(self, dead: dict[str, Any]) -> None:
        """Send a dead letter again (attempts start over)."""
        due, items = queue_keys(self.keys, dead["webhook"])
        payload = json.dumps({"event": dead["event"], "attempts": 0}, separators=(",", ":"))
        pipe = self.r.pipeline()
        pipe.hset(items, dead["id"], payload)
        pipe.zadd(due, {dead["id"]: time.time()})
        pipe.execute()


def queue_keys(keys: Keys, name: str) -> tuple[str, str]:
    """(sorted set delivery_id -> due time, hash delivery_id -> JSON)."""
    return keys.notifier_webhook_queue(name)


# Take up to N due deliveries and lease them (push their due time out) atomically,
# so two notifier replicas never send the same delivery at once.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return ids
"""


class WebhookSender:
    """Delivers one target's queue (one thread per target)."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        cfg: WebhookConfig,
        dead_letters: DeadLetters,
        *,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
        resolver: Callable[[str, int], list[str]] = resolve,
    ) -> None:
        self.r, self.cfg, self.dead = r, cfg, dead_letters
        self.resolver = resolver
        self.due_key, self.items_key = queue_keys(keys, cfg.name)
        self.clock = clock
        self.client = client or httpx.Client(timeout=cfg.timeout_s, follow_redirects=False)
        self._claim = r.register_script(_CLAIM)
        self.failures = 0  # consecutive failed attempts of this target
        self.hold_until = 0.0
        self._down_logged = False
        self._burst = BurstLimiter(60.0)
        self.secret = cfg.secret.get_secret_value().encode()

    def new_delivery(self, event: dict[str, Any]) -> tuple[str, str]:
        """(delivery id, JSON) to enqueue for ``event``."""
        did = uuid.uuid4().hex
        return did, json.dumps({"event": event, "attempts": 0}, separators=(",", ":"))

    def backoff(self, attempts: int) -> float:
        return min(self.cfg.backoff_max_s, self.cfg.backoff_initial_s * 2 ** max(0, attempts - 1))

    def pending(self) -> int:
        return int(self.r.zcard(self.due_key))

    def next_due(self) -> float | None:
        head = self.r.zrange(self.due_key, 0, 0, withscores=True)
        return float(head[0][1]) if head else None

    def run_once(self) -> int:
        """Send what is due now; returns deliveries that succeeded."""
        now = self.clock()
        if now < self.hold_until:
            return 0
        lease = now + self.cfg.timeout_s * 2 + 5
        ids = self._claim(keys=[self.due_key], args=[now, 20, lease])
        delivered = 0
        for i, did in enumerate(ids):
            raw = self.r.hget(self.items_key, did)
            if raw is None:
                self.r.zrem(self.due_key, did)
                continue
            item = json.loads(raw)
            ok, retry, error = self._send(item["event"])
            item["attempts"] += 1
            if ok:
                pipe = self.r.pipeline()
                pipe.hdel(self.items_key, did)
                pipe.zrem(self.due_key, did)
                pipe.execute()
                delivered += 1
                self._target_up()
                continue
            if not retry or item["attempts"] >= self.cfg.max_attempts:
                self._dead_letter(did, item, error)
            else:
                pipe = self.r.pipeline()
                pipe.hset(self.items_key, did, json.dumps(item, separators=(",", ":")))
                pipe.zadd(self.due_key, {did: self.clock() + self.backoff(item["attempts"])})
                pipe.execute()
            if retry:
                self._target_down(error)
                # Give the rest of this batch back: the target waits as a whole.
                rest = ids[i + 1 :]
                if rest:
                    self.r.zadd(self.due_key, dict.fromkeys(rest, self.clock()))
                break
        return delivered

    def _send(self, event: dict[str, Any]) -> tuple[bool, bool, str]:
        """(delivered, worth retrying, error)."""
        try:
            target = pin(self.cfg.url, self.cfg.allow_internal, self.resolver)
        except AddressRefused as exc:
            return False, False, f"address refused: {exc}"
        except (OSError, UnicodeError) as exc:
            metrics.WEBHOOK_ATTEMPTS.labels(self.cfg.name, "error").inc()
            return False, True, f"cannot resolve: {exc}"
        body = json.dumps(event, separators=(",", ":")).encode()
        ts = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "sentri-notifier",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.secret, ts, body),
            EVENT_ID_HEADER: str(event.get("event_id", "")),
        }
        t0 = time.perf_counter()
        try:
            resp = self.client.post(
                target.url, content=body, headers={**headers, **target.headers},
                extensions=target.extensions,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            metrics.WEBHOOK_ATTEMPTS.labels(self.cfg.name, "error").inc()
            return False, True, f"{type(exc).__name__}: {exc}"
        metrics.WEBHOOK_SECONDS.labels(self.cfg.name).observe(time.perf_counter() - t0)
        if 200 <= resp.status_code < 300:
            metrics.WEBHOOK_ATTEMPTS.labels(self.cfg.name, "ok").inc()
            return True, False, ""
        metrics.WEBHOOK_ATTEMPTS.labels(self.cfg.name, str(resp.status_code)).inc()
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        return False, not permanent, f"HTTP {resp.status_code}"

    def _dead_letter(self, did: str, item: dict[str, Any], error: str) -> None:
        event = item["event"]
        # One transaction: the delivery leaves the queue as it enters the dead letters
        # (never in both, never in neither, whatever a reader or a crash sees).
        pipe = self.r.pipeline(transaction=True)
        self.dead.add({
            "id": did, "webhook": self.cfg.name, "url": self.cfg.url,
            "event_id": event.get("event_id"), "camera_id": event.get("camera_id"),
            "type": event.get("type"), "attempts": item["attempts"], "error": error,
            "ts": int(self.clock() * 1000), "event": event,
        }, pipe)  # fmt: skip
        pipe.hdel(self.items_key, did)
        pipe.zrem(self.due_key, did)
        pipe.execute()
        metrics.WEBHOOK_DEAD.labels(self.cfg.name).inc()
        ok, suppressed = self._burst.should_log("dead")
        if ok:
            log.warning(
                "webhook delivery given up: dead letter",
                extra={"webhook": self.cfg.name, "event_id": event.get("event_id"),
                       "camera_id": event.get("camera_id"), "attempts": item["attempts"],
                       "error": error, "suppressed": suppressed},
            )  # fmt: skip

    def _target_down(self, error: str) -> None:
        self.failures += 1
        self.hold_until = self.clock() + self.backoff(self.failures)
        if not self._down_logged:
            self._down_logged = True
            log.warning(
                "webhook target failing; retrying with backoff",
                extra={"webhook": self.cfg.name, "error": error},
            )

    def _target_up(self) -> None:
        if self._down_logged:
            log.info(
                "webhook target delivering again",
                extra={"webhook": self.cfg.name, "failed_attempts": self.failures},
            )
        self.failures, self.hold_until, self._down_logged = 0, 0.0, False

    def loop(self, stop: threading.Event, wake: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
                nxt = self.next_due()
                metrics.WEBHOOK_PENDING.labels(self.cfg.name).set(self.pending())
            except redis.RedisError as exc:
                ok, _ = self._burst.should_log("redis")
                if ok:
                    log.warning("webhook queue unavailable", extra={"error": str(exc)})
                nxt = None
            except Exception:
                log.exception("webhook sender failed", extra={"webhook": self.cfg.name})
                nxt = None
            now = self.clock()
            wait = 1.0 if nxt is None else max(nxt, self.hold_until) - now
            wake.wait(min(1.0, max(0.01, wait)))
            wake.clear()

    def close(self) -> None:
        self.client.close()

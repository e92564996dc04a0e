"""The notifier: reads ``events`` through a consumer group and fans out to MQTT and webhooks.

At least once, duplicates suppressed: an event whose ``event_id`` was already handled
(Redis key with TTL) is acknowledged and skipped.  Marking it handled, queueing its
webhook deliveries and acknowledging the stream entry happen in one Lua script, so a
crash at any point neither loses a delivery nor queues it twice.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from services.notifier import metrics
from services.notifier.config import NotifierConfig, WebhookConfig
from services.notifier.mqtt import MqttOutput
from services.notifier.webhooks import DeadLetters, WebhookSender, WebhookStore
from shared.events import EventConsumer
from shared.keys import Keys
from shared.logs import BurstLimiter
from shared.rules import RulesStore

log = logging.getLogger(__name__)

# KEYS: seen, stream, then (due, items) per delivery.  ARGV: ttl, group, entry id,
# then (delivery id, payload, due time) per delivery.
_COMMIT = """
local new = redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1])
if new then
  local n = (#KEYS - 2) / 2
  for i = 0, n - 1 do
    redis.call('HSET', KEYS[4 + 2 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i])
    redis.call('ZADD', KEYS[3 + 2 * i], ARGV[6 + 3 * i], ARGV[4 + 3 * i])
  end
end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
if new then return 1 else return 0 end
"""

OCCUPANCY_EVENTS = ("object_entered", "object_left")


def _well_formed(ev: dict[str, Any]) -> bool:
    """The fields the notifier routes on have the documented types."""
    return (
        "error" not in ev
        and isinstance(ev.get("type"), str)
        and isinstance(ev.get("camera_id"), str)
        and all(isinstance(ev.get(k), str | None) for k in ("event_id", "class", "zone", "line"))
    )


@dataclass
class _WebhookWorker:
    sender: WebhookSender
    wake: threading.Event
    stop: threading.Event
    thread: threading.Thread | None = None


class Notifier:
    def __init__(
        self,
        cfg: NotifierConfig,
        r: redis.Redis,
        rb: redis.Redis,
        keys: Keys,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.r, self.rb, self.keys = cfg, r, rb, keys
        self.clock = clock
        consumer = cfg.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.consumer = EventConsumer(r, keys, cfg.group, consumer, start="$")
        self.rules = RulesStore(r, keys)
        self.dead_letters = DeadLetters(r, keys, cfg.dead_letters_max)
        self.webhook_store = WebhookStore(r, keys)
        self.workers: dict[str, _WebhookWorker] = {}
        self._webhooks_version: int | None = None
        self._next_webhook_check = 0.0
        self.mqtt = MqttOutput(cfg.mqtt) if cfg.mqtt.url else None
        self._commit = r.register_script(_COMMIT)
        self.stop_event = threading.Event()
        self._idle_logged = False
        self._burst = BurstLimiter()
        self._classes: dict[str, set[str]] = {}  # camera -> classes announced
        self._lines_published: set[tuple[str, str]] = set()
        self._occupied: set[tuple[str, str]] = set()  # (camera, class) with tracks in view
        self._missing: dict[tuple[str, str, str], float] = {}  # -> first seen absent (ms)
        self._rules_version: int | None = None
        self._next_discovery = 0.0

    @property
    def senders(self) -> list[WebhookSender]:
        return [w.sender for w in self.workers.values()]

    @property
    def enabled(self) -> bool:
        """Anything to send to (MQTT, or webhooks from the YAML or the dashboard)."""
        return self.mqtt is not None or bool(self.workers)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Notifier:
        try:
            self.webhook_store.set_static(self.cfg.webhooks)
        except redis.RedisError as exc:
            log.warning("could not publish the configured webhooks", extra={"error": str(exc)})
        self._reload_webhooks(force=True)
        if self.mqtt is not None:
            self.mqtt.on_connected.append(self._republish_state)
            self.mqtt.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for name in list(self.workers):
            self._stop_worker(name)
        if self.mqtt is not None:
            self.mqtt.stop()

    def run(self) -> None:
        """Consume until :meth:`stop`; Redis outages are retried, logged once per burst."""
        next_claim = 0.0
        while not self.stop_event.is_set():
            try:
                self._reload_webhooks()
                self._discovery_tick()
                if not self.enabled and not self._idle_logged:
                    self._idle_logged = True
                    log.info("no MQTT broker or webhook configured; idling (set "
                             "notifier.mqtt.url, or add a webhook)")  # fmt: skip
                entries = self.consumer.read(count=100, block_ms=500)
                now = time.monotonic()
                if now >= next_claim:
                    entries += self.consumer.claim_stale(int(self.cfg.claim_idle_s * 1000))
                    next_claim = now + self.cfg.claim_idle_s / 2
                for entry in entries:
                    self._handle_safely(entry)
            except redis.RedisError as exc:
                ok, suppressed = self._burst.should_log("redis")
                if ok:
                    log.warning("redis unavailable; retrying",
                                extra={"error": str(exc), "suppressed": suppressed})  # fmt: skip
                self.stop_event.wait(1.0)

    # ------------------------------------------------------------------ events
    def _handle_safely(self, entry: dict[str, Any]) -> None:
        """A malformed event must not stop the notifier: count, log once per burst, ack."""
        entry_id = entry.get("id")
        try:
            self.handle(dict(entry))
        except redis.RedisError:
            raise  # not the event's fault: retried by the loop
        except Exception as exc:
            metrics.EVENTS.labels("invalid").inc()
            ok, suppressed = self._burst.should_log("bad_event")
            if ok:
                log.warning("event could not be handled; skipped",
                            extra={"entry": entry_id, "error": repr(exc),
                                   "suppressed": suppressed})  # fmt: skip
            if entry_id:
                self.consumer.ack(str(entry_id))

    def handle(self, entry: dict[str, Any]) -> bool:
        """Handle one stream entry; False for a duplicate (already handled)."""
        entry_id = entry.pop("id")
        if not _well_formed(entry):
            self.consumer.ack(entry_id)
            metrics.EVENTS.labels("invalid").inc()
            ok, suppressed = self._burst.should_log("bad_event")
            if ok:
                log.warning("malformed event skipped",
                            extra={"entry": entry_id, "suppressed": suppressed})  # fmt: skip
            return False
        if not self.enabled:  # idle: nothing to send, keep the group current
            self.consumer.ack(entry_id)
            metrics.EVENTS.labels("idle").inc()
            return False
        event_id = str(entry.get("event_id") or entry_id)
        seen_key = self.keys.notifier_seen(event_id)
        if self.r.exists(seen_key):
            self.consumer.ack(entry_id)
            metrics.EVENTS.labels("duplicate").inc()
            return False
        if self.mqtt is not None and isinstance(entry.get("camera_id"), str) and entry["camera_id"]:
            try:
                self._to_mqtt(entry)
            except (redis.RedisError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("mqtt output failed for an event",
                            extra={"event_id": event_id, "camera_id": entry.get("camera_id"),
                                   "error": str(exc)})  # fmt: skip
        when = datetime.fromtimestamp(self.clock())
        keys_: list[str] = [seen_key, self.consumer.stream]
        args: list[Any] = [self.cfg.dedupe_ttl_s, self.cfg.group, entry_id]
        woken = []
        for worker in list(self.workers.values()):
            sender = worker.sender
            if not sender.cfg.filter.matches(entry, when):
                continue
            did, payload = sender.new_delivery(entry)
            keys_ += [sender.due_key, sender.items_key]
            args += [did, payload, self.clock()]
            woken.append(worker.wake)
        new = self._commit(keys=keys_, args=args)
        if not new:
            metrics.EVENTS.labels("duplicate").inc()
            return False
        metrics.EVENTS.labels("handled").inc()
        for wake in woken:
            wake.set()
        return True

    # ------------------------------------------------------------------ webhooks
    def _reload_webhooks(self, force: bool = False) -> None:
        """Webhooks = YAML ones + the dashboard's (Redis), re-read when their version moves."""
        now = time.monotonic()
        if not force and now < self._next_webhook_check:
            return
        self._next_webhook_check = now + 1.0
        version = self.webhook_store.version()
        if version == self._webhooks_version and not force:
            return
        self._webhooks_version = version
        wanted = {w.name: w for w in self.cfg.webhooks}
        for w in self.webhook_store.list():
            if w.name in wanted:
                log.warning("dashboard webhook ignored: the config file has one of that name",
                            extra={"webhook": w.name})  # fmt: skip
                continue
            wanted[w.name] = w
        for name in list(self.workers):
            old = self.workers[name].sender.cfg
            if name not in wanted or old.model_dump_json() != wanted[name].model_dump_json():
                self._stop_worker(name)
        for name, cfg in wanted.items():
            if name not in self.workers:
                self._start_worker(cfg)
        log.info("webhooks loaded", extra={"webhooks": ",".join(sorted(wanted)) or "-"})

    def _start_worker(self, cfg: WebhookConfig) -> None:
        sender = WebhookSender(self.r, self.keys, cfg, self.dead_letters, clock=self.clock)
        w = _WebhookWorker(sender, threading.Event(), threading.Event())
        w.thread = threading.Thread(
            target=sender.loop, args=(w.stop, w.wake), name=f"webhook-{cfg.name}", daemon=True
        )
        w.thread.start()
        self.workers[cfg.name] = w

    def _stop_worker(self, name: str) -> None:
        w = self.workers.pop(name)
        w.stop.set()
        w.wake.set()
        if w.thread is not None:
            w.thread.join(5)
        w.sender.close()

    def _to_mqtt(self, ev: dict[str, Any]) -> None:
        assert self.mqtt is not None
        cam = ev["camera_id"]
        self.mqtt.event(ev)
        typ, cls = ev.get("type"), ev.get("class")
        if typ in OCCUPANCY_EVENTS and cls and ev.get("track_id") is not None:
            self._announce(cam, cls)
            key = self.keys.notifier_occupancy(cam, cls)
            pipe = self.r.pipeline()
            if typ == "object_entered":
                pipe.sadd(key, str(ev["track_id"]))
                pipe.expire(key, 86400)
            else:
                pipe.srem(key, str(ev["track_id"]))
            pipe.scard(key)
            count = int(pipe.execute()[-1])
            self.mqtt.occupancy(cam, cls, count)
            self._occupied.add((cam, cls))
        if (
            typ in ("zone_entered", "zone_left")
            and ev.get("zone")
            and ev.get("track_id") is not None
        ):
            key = self.keys.notifier_zone_occupancy(cam, str(ev["zone"]))
            pipe = self.r.pipeline()
            if typ == "zone_entered":
                pipe.sadd(key, str(ev["track_id"]))
                pipe.expire(key, 86400)
            else:
                pipe.srem(key, str(ev["track_id"]))
            pipe.scard(key)
            self.mqtt.zone_occupancy(cam, str(ev["zone"]), int(pipe.execute()[-1]))
        if typ == "line_crossed" and ev.get("line"):
            self._announce(cam, None)
            totals = self.rules.totals(cam).get(ev["line"], {})
            self.mqtt.line_counts(cam, ev["line"], totals)
        sid = ev.get("snapshot_id")
        if sid:
            jpeg = self.rb.get(self.keys.snapshot(str(sid)))
            if jpeg:
                self.mqtt.snapshot(cam, jpeg)

    # ------------------------------------------------------------------ discovery
    def _named(self, camera_id: str, all_rules: dict | None = None) -> dict[str, dict[str, str]]:
        """{"lines": id -> name, "zones": id -> name} of a camera's rules."""
        rules = all_rules.get(camera_id) if all_rules is not None else self.rules.get(camera_id)
        if rules is None:
            return {"lines": {}, "zones": {}}
        return {
            "lines": {ln.id: ln.name or ln.id for ln in rules.lines},
            "zones": {z.id: z.name or z.id for z in rules.zones},
        }

    def _publish_new_lines(self, camera_id: str, lines: dict[str, str]) -> None:
        """Retained counters for lines not published yet (after a start, a new line)."""
        assert self.mqtt is not None
        new = [ln for ln in lines if (camera_id, ln) not in self._lines_published]
        if not new:
            return
        totals = self.rules.totals(camera_id)
        for ln in new:
            self.mqtt.line_counts(camera_id, ln, totals.get(ln, {}))
            self._lines_published.add((camera_id, ln))

    def _announce(self, camera_id: str, cls: str | None) -> None:
        assert self.mqtt is not None
        known = self._classes.setdefault(camera_id, set(self.cfg.mqtt.occupancy_classes))
        if cls is not None:
            known.add(cls)
        named = self._named(camera_id)
        self.mqtt.announce_camera(camera_id, sorted(known), named["lines"], named["zones"])

    def _reconcile_occupancy(self) -> None:
        """Tracks whose ``object_left`` never comes (their detector replica was killed)
        must not keep a sensor ON: a track absent from the camera's latest detections
        (or the camera has none newer than ``occupancy_stale_s``) at every check during
        ``occupancy_stale_s`` goes."""
        assert self.mqtt is not None
        now_ms = self.clock() * 1000
        for cam, cls in list(self._occupied):
            key = self.keys.notifier_occupancy(cam, cls)
            raw = self.r.get(self.keys.latest("detections", cam))
            present: set[str] = set()
            try:
                rec = json.loads(raw) if raw else None
                if rec and now_ms - float(rec.get("ts", 0)) <= self.cfg.occupancy_stale_s * 1000:
                    present = {str(o.get("track_id")) for o in rec.get("objects", ())
                               if o.get("class") == cls and o.get("track_id") is not None}  # fmt: skip
            except (ValueError, TypeError, AttributeError):
                present = set()
            members = self.r.smembers(key)
            gone = []
            for tid in members:
                k = (cam, cls, tid)
                if tid in present:
                    self._missing.pop(k, None)
                    continue
                since = self._missing.setdefault(k, now_ms)
                if now_ms - since >= self.cfg.occupancy_stale_s * 1000:
                    gone.append(tid)
                    self._missing.pop(k, None)
            if gone:
                pipe = self.r.pipeline()
                pipe.srem(key, *gone)
                pipe.scard(key)
                count = int(pipe.execute()[-1])
                self.mqtt.occupancy(cam, cls, count)
                log.info("occupancy corrected: tracks gone without object_left",
                         extra={"camera_id": cam, "class": cls, "tracks": len(gone)})  # fmt: skip
            if not members or (gone and len(gone) == len(members)):
                self._occupied.discard((cam, cls))

    def _discovery_tick(self) -> None:
        """Announce cameras from the registry and lines from the rules, when they change."""
        if self.mqtt is None or time.monotonic() < self._next_discovery:
            return
        self._next_discovery = time.monotonic() + self.cfg.mqtt.discovery_refresh_s
        self._reconcile_occupancy()
        cameras = set(self.r.smembers(self.keys.cameras))
        all_rules = self.rules.all()
        for cam in sorted(cameras | set(all_rules) | set(self._classes)):
            known = self._classes.setdefault(cam, set(self.cfg.mqtt.occupancy_classes))
            named = self._named(cam, all_rules)
            self.mqtt.announce_camera(cam, sorted(known), named["lines"], named["zones"])
            self._publish_new_lines(cam, named["lines"])

    def _republish_state(self) -> None:
        """After (re)connecting: discovery and line counters again on the next loop turn."""
        self._lines_published.clear()
        self._next_discovery = 0.0

"""MQTT output: events, occupancy, line counters, snapshots and Home Assistant discovery.

Topics (``<p>`` = ``notifier.mqtt.topic_prefix``, default ``sentri``; camera ids are
``<client>/<name>``, so ``<p>/<camera_id>`` is ``<p>/<client>/<name>``)::

    <p>/<client_id>/availability            online | offline (retained; last will)
    <p>/<camera_id>/events                  every event, JSON (QoS 1)
    <p>/<camera_id>/<class>/occupancy       ON | OFF (retained)
    <p>/<camera_id>/<class>/count           objects of that class in view (retained)
    <p>/<camera_id>/zones/<zone_id>/occupancy   ON | OFF (retained), .../count
    <p>/<camera_id>/lines/<line_id>         {"a_to_b": n, "b_to_a": m, "total": n+m} (retained)
    <p>/<camera_id>/snapshot                JPEG of the latest event snapshot (retained)

where ``<client_id>`` is ``notifier.mqtt.client_id``.  Discovery configs go to
``<discovery_prefix>/<component>/sentri/<unique_id>/config`` (retained): a device
per camera, a ``binary_sensor`` per camera and class, a ``sensor`` per line, an
``image`` for the snapshot.  Unique ids derive from the camera id only, so a restart
updates the same entities instead of adding new ones.

paho's network thread does all I/O: publishing never blocks the caller.  While the
broker is down or refuses the login, paho retries with exponential backoff
(``reconnect_min_s`` .. ``reconnect_max_s``); each outage is logged once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import ssl
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from services.notifier import metrics
from services.notifier.config import MqttConfig

log = logging.getLogger(__name__)


def slug(camera_id: str) -> str:
    """A stable, HA-safe id for a camera: readable part + hash of the exact id."""
    readable = re.sub(r"[^a-z0-9]+", "_", camera_id.lower()).strip("_")[:40]
    return f"{readable}_{hashlib.sha1(camera_id.encode()).hexdigest()[:6]}"


def ident(value: str) -> str:
    """A class name or line id inside a unique id (already short, simple names)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", value)[:64] or "_"


def topic_part(value: str) -> str:
    """Strip what MQTT forbids or treats as wildcards from a topic level."""
    return re.sub(r"[+#\x00]", "_", value) or "_"


class MqttOutput:
    def __init__(self, cfg: MqttConfig) -> None:
        if not cfg.url:
            raise ValueError("notifier.mqtt.url is not set")
        self.cfg = cfg
        url = urlsplit(cfg.url)
        self.host = url.hostname or "localhost"
        self.tls = url.scheme == "mqtts"
        self.port = url.port or (8883 if self.tls else 1883)
        p = cfg.topic_prefix
        self.availability_topic = f"{p}/{cfg.client_id}/availability"
        self.connected = threading.Event()
        self._announced: set[str] = set()  # unique ids whose config was published
        self._configs: dict[str, tuple[str, str]] = {}  # unique_id -> (topic, payload)
        self._lock = threading.Lock()
        self._down_logged = False
        self._failures = 0
        self._stopping = False
        self.on_connected: list[Any] = []  # callbacks run after each (re)connect

        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id, protocol=mqtt.MQTTv311
        )
        if url.username:
            c.username_pw_set(unquote(url.username), unquote(url.password or ""))
        if self.tls:
            ctx = ssl.create_default_context(cafile=cfg.ca_file)
            c.tls_set_context(ctx)
        c.will_set(self.availability_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(max(1, int(cfg.reconnect_min_s)), max(1, int(cfg.reconnect_max_s)))
        c.max_queued_messages_set(cfg.max_queued)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self.client = c

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Clean shutdown: say offline ourselves (a clean disconnect sends no will)."""
        self._stopping = True
        if self.connected.is_set():
            info = self.client.publish(self.availability_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(2)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, _userdata, _flags, reason_code, _props) -> None:
        if reason_code.is_failure:
            self._failed(f"connection refused: {reason_code}")
            return
        self.connected.set()
        metrics.MQTT_CONNECTED.set(1)
        log.info(
            "mqtt connected",
            extra={"broker": f"{self.host}:{self.port}", "failed_attempts": self._failures},
        )
        self._down_logged, self._failures = False, 0
        client.publish(self.availability_topic, "online", qos=1, retain=True)
        with self._lock:
            configs = list(self._configs.values())
        for topic, payload in configs:  # the broker may have lost retained configs
            client.publish(topic, payload, qos=1, retain=True)
        for cb in list(self.on_connected):
            try:
                cb()
            except Exception:
                log.exception("mqtt on-connect callback failed")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        metrics.MQTT_CONNECTED.set(0)
        if was and not self._stopping:
            self._failed(f"disconnected: {reason_code}")

    def _on_connect_fail(self, _client, _userdata) -> None:
        self._failed("broker unreachable")

    def _failed(self, why: str) -> None:
        self._failures += 1
        metrics.MQTT_CONNECT_FAILURES.inc()
        if not self._down_logged:  # once per outage; "mqtt connected" ends it
            self._down_logged = True
            log.warning(
                "mqtt broker unavailable; retrying with backoff",
                extra={"broker": f"{self.host}:{self.port}", "error": why},
            )

    # ------------------------------------------------------------------ publishing
    def publish(self, kind: str, topic: str, payload: str | bytes, *, retain: bool = False,
                qos: int | None = None) -> bool:  # fmt: skip
        info = self.client.publish(
            topic, payload, qos=self.cfg.qos if qos is None else qos, retain=retain
        )
        ok = info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # queued while offline
        metrics.MQTT_MESSAGES.labels(kind, "queued" if ok else "dropped").inc()
        return ok

    def camera_topic(self, camera_id: str, *parts: str) -> str:
        levels = [self.cfg.topic_prefix, *(topic_part(x) for x in camera_id.split("/"))]
        return "/".join(levels + [topic_part(x) for x in parts])

    def event(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"))
        self.publish("event", self.camera_topic(event["camera_id"], "events"), body)

    def occupancy(self, camera_id: str, class_name: str, count: int) -> None:
        self.publish("occupancy", self.camera_topic(camera_id, class_name, "occupancy"),
                     "ON" if count > 0 else "OFF", retain=True, qos=1)  # fmt: skip
        self.publish("occupancy", self.camera_topic(camera_id, class_name, "count"),
                     str(count), retain=True, qos=1)  # fmt: skip

    def zone_occupancy(self, camera_id: str, zone_id: str, count: int) -> None:
        self.publish("zone", self.camera_topic(camera_id, "zones", zone_id, "occupancy"),
                     "ON" if count > 0 else "OFF", retain=True, qos=1)  # fmt: skip
        self.publish("zone", self.camera_topic(camera_id, "zones", zone_id, "count"),
                     str(count), retain=True, qos=1)  # fmt: skip

    def line_counts(self, camera_id: str, line_id: str, counts: dict[str, int]) -> None:
        a, b = int(counts.get("a_to_b", 0)), int(counts.get("b_to_a", 0))
        body = json.dumps({"a_to_b": a, "b_to_a": b, "total": a + b})
        self.publish("line", self.camera_topic(camera_id, "lines", line_id), body, retain=True,
                     qos=1)  # fmt: skip

    def snapshot(self, camera_id: str, jpeg: bytes) -> None:
        self.publish("snapshot", self.camera_topic(camera_id, "snapshot"), jpeg, retain=True,
                     qos=0)  # fmt: skip

    # ------------------------------------------------------------------ discovery
    def _device(self, camera_id: str) -> dict[str, Any]:
        return {
            "identifiers": [f"sentri_{slug(camera_id)}"],
            "name": f"Sentri {camera_id}",
            "manufacturer": "Sentri",
            "model": "Camera",
        }

    def _announce(self, component: str, unique_id: str, config: dict[str, Any]) -> None:
        if not self.cfg.discovery:
            return
        config = {
            **config,
            "unique_id": unique_id,
            "availability": [{"topic": self.availability_topic}],
            "payload_available": "online",
            "payload_not_available": "offline",
        }
        topic = f"{self.cfg.discovery_prefix}/{component}/sentri/{unique_id}/config"
        payload = json.dumps(config, separators=(",", ":"), sort_keys=True)
        with self._lock:
            if self._configs.get(unique_id) == (topic, payload):
                return
            self._configs[unique_id] = (topic, payload)
        self.publish("discovery", topic, payload, retain=True, qos=1)

    def announce_camera(
        self, camera_id: str, classes: list[str], lines: dict[str, str],
        zones: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Discovery for one camera: occupancy per class and per zone, counter per line,
        snapshot image."""
        s, dev = slug(camera_id), self._device(camera_id)
        for zone_id, name in (zones or {}).items():
            self._announce("binary_sensor", f"sentri_{s}_zone_{ident(zone_id)}_occupancy", {
                "name": f"{name} occupancy", "device": dev, "device_class": "occupancy",
                "state_topic": self.camera_topic(camera_id, "zones", zone_id, "occupancy"),
                "payload_on": "ON", "payload_off": "OFF",
            })  # fmt: skip
        for cls in classes:
            self._announce("binary_sensor", f"sentri_{s}_{ident(cls)}_occupancy", {
                "name": f"{cls} occupancy", "device": dev, "device_class": "occupancy",
                "state_topic": self.camera_topic(camera_id, cls, "occupancy"),
                "payload_on": "ON", "payload_off": "OFF",
            })  # fmt: skip
        for line_id, name in lines.items():
            self._announce("sensor", f"sentri_{s}_line_{ident(line_id)}", {
                "name": f"{name} crossings", "device": dev, "state_class": "total_increasing",
                "state_topic": self.camera_topic(camera_id, "lines", line_id),
                "value_template": "{{ value_json.total }}",
                "json_attributes_topic": self.camera_topic(camera_id, "lines", line_id),
                "unit_of_measurement": "crossings",
            })  # fmt: skip
        self._announce("image", f"sentri_{s}_snapshot", {
            "name": "Latest snapshot", "device": dev, "content_type": "image/jpeg",
            "image_topic": self.camera_topic(camera_id, "snapshot"),
        })  # fmt: skip

"""The notifier against a real mosquitto: discovery, events, occupancy, counters, last will."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from services.notifier.config import NotifierConfig
from services.notifier.mqtt import slug
from services.notifier.service import Notifier
from shared.redisutil import connect, publish_record
from shared.rules import RulesStore
from tests.helpers import wait_for

CAM = "lab/cam0"


def event(type_: str, **kw) -> dict:
    return {"type": type_, "event_id": uuid.uuid4().hex, "camera_id": CAM, "client_id": "lab",
            "ts": 1_767_225_600_000, "class": "person", "track_id": 7, **kw}  # fmt: skip


def start_notifier(tmp_path, redis_url, prefix, mqtt_url, name="n1"):
    cfg = {
        "redis": {"url": redis_url, "prefix": prefix},
        "notifier": {"mqtt": {"url": mqtt_url, "discovery_refresh_s": 0.5,
                              "reconnect_max_s": 2}, "consumer": name},
        "rules": {"cameras": {CAM: {
            "lines": [{"id": "door", "name": "Shop door", "points": [[0, 0.5], [1, 0.5]]}],
            "zones": [{"id": "mat", "name": "Mat", "points": [[0, 0], [1, 0], [1, 1]]}]}}},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "services.notifier", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
    )  # fmt: skip


def test_discovery_events_counters_and_last_will(
    tmp_path, broker, recorder_factory, redis_url, prefix, keys, r
):
    rec = recorder_factory(broker)
    r.sadd(keys.cameras, CAM)
    proc = start_notifier(tmp_path, redis_url, prefix, broker.url)
    try:
        avail = "sentri/sentri-notifier/availability"
        wait_for(lambda: rec.get(avail) == b"online", 20, what="online")
        s = slug(CAM)
        occ = f"homeassistant/binary_sensor/sentri/sentri_{s}_person_occupancy/config"
        line = f"homeassistant/sensor/sentri/sentri_{s}_line_door/config"
        image = f"homeassistant/image/sentri/sentri_{s}_snapshot/config"
        zone = f"homeassistant/binary_sensor/sentri/sentri_{s}_zone_mat_occupancy/config"
        wait_for(lambda: rec.get(occ) and rec.get(image) and rec.get(line) and rec.get(zone), 10,
                 what="discovery")  # fmt: skip
        configs = {t: json.loads(rec.get(t)) for t in (occ, line, image, zone)}
        for topic, c in configs.items():
            assert c["unique_id"] and topic.endswith(f"/{c['unique_id']}/config")
            assert c["device"]["identifiers"] == [f"sentri_{s}"]
            assert c["availability"] == [{"topic": avail}]
            assert c.get("state_topic") or c.get("image_topic")
        assert configs[occ]["state_topic"] == "sentri/lab/cam0/person/occupancy"
        assert configs[occ]["device_class"] == "occupancy"
        assert configs[line]["state_topic"] == "sentri/lab/cam0/lines/door"
        assert configs[image]["image_topic"] == "sentri/lab/cam0/snapshot"
        assert configs[zone]["state_topic"] == "sentri/lab/cam0/zones/mat/occupancy"
        # The line counter is published (retained) at start, before any crossing.
        wait_for(lambda: rec.json_on("/lines/door"), 10, what="initial line counter")
        assert rec.json_on("/lines/door")[-1] == {"a_to_b": 0, "b_to_a": 0, "total": 0}

        # Events: an entered person with a snapshot, then the same event again.
        jpeg = b"\xff\xd8fake-jpeg\xff\xd9"
        connect(redis_url, decode=False).set(keys.snapshot("snap1"), jpeg)
        entered = event("object_entered", snapshot_id="snap1")
        publish_record(r, keys, "events", entered, maxlen=1000)
        publish_record(r, keys, "events", entered, maxlen=1000)  # duplicate
        wait_for(lambda: rec.get("sentri/lab/cam0/person/occupancy") == b"ON", 10, what="ON")
        # The count is a message of its own, published after the occupancy.
        wait_for(lambda: rec.get("sentri/lab/cam0/person/count") == b"1", 10, what="count 1")
        wait_for(lambda: rec.get("sentri/lab/cam0/snapshot") == jpeg, 10, what="snapshot")
        crossed = event("line_crossed", line="door", direction="a_to_b")
        RulesStore(r, keys).count_crossings([crossed], 1)  # what the detector side does
        publish_record(r, keys, "events", crossed, maxlen=1000)
        wait_for(lambda: rec.json_on("/lines/door")[-1]["total"] == 1, 10, what="line counter")
        assert rec.json_on("/lines/door")[-1] == {"a_to_b": 1, "b_to_a": 0, "total": 1}
        publish_record(r, keys, "events", event("zone_entered", zone="mat"), maxlen=1000)
        wait_for(lambda: rec.get("sentri/lab/cam0/zones/mat/occupancy") == b"ON", 10,
                 what="zone occupancy")  # fmt: skip
        publish_record(r, keys, "events", event("object_left", reason="lost"), maxlen=1000)
        wait_for(lambda: rec.get("sentri/lab/cam0/person/occupancy") == b"OFF", 10, what="OFF")
        events = rec.json_on("sentri/lab/cam0/events")
        assert [e["type"] for e in events] == [
            "object_entered",
            "line_crossed",
            "zone_entered",
            "object_left",
        ]
        assert events[0]["event_id"] == entered["event_id"]

        # kill -9: the broker publishes the last will.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: rec.get(avail) == b"offline", 10, what="offline via last will")

        # A restart announces the same entities (same unique ids, same topics).
        before = {t for t, *_ in rec.messages if t.startswith("homeassistant/")}
        proc = start_notifier(tmp_path, redis_url, prefix, broker.url, name="n2")
        wait_for(lambda: rec.get(avail) == b"online", 20, what="online again")
        rec2 = recorder_factory(broker, ("homeassistant/#",))
        wait_for(lambda: len(rec2.latest) >= len(before), 10, what="retained configs")
        assert set(rec2.latest) == before
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


@pytest.mark.parametrize("case", ["refused_login", "broker_down"])
def test_broker_trouble_never_blocks_and_is_logged_once(
    tmp_path, port_factory, redis_url, prefix, keys, r, caplog, recorder_factory, case
):
    """Wrong password, or no broker at all: events are still consumed and acked at
    once (webhooks would go on); one warning per outage while paho retries with
    backoff; once the broker is there, the retained state published meanwhile arrives."""
    from services.notifier import metrics
    from tests.services.notifier.conftest import Broker

    port = port_factory()
    broker = Broker(tmp_path, port, "sentri", "right-password")
    if case == "refused_login":
        broker.start()
    try:
        url = broker.url
        if case == "refused_login":
            url = url.replace("right-password", "wrong")
        cfg = NotifierConfig.model_validate(
            {"mqtt": {"url": url, "reconnect_min_s": 0.1, "reconnect_max_s": 1}}
        )
        failures0 = metrics.MQTT_CONNECT_FAILURES._value.get()
        caplog.set_level(logging.INFO, logger="services.notifier")
        n = Notifier(cfg, r, connect(redis_url, decode=False), keys).start()
        try:
            for _ in range(20):
                publish_record(r, keys, "events", event("object_entered"), maxlen=1000)
            handled = []
            while len(handled) < 20:
                entries = n.consumer.read(count=100, block_ms=2000)
                assert entries, "events must be consumed while the broker is unusable"
                handled += [n.handle(e) for e in entries]
            assert all(handled) and n.consumer.pending_count() == 0
            wait_for(lambda: metrics.MQTT_CONNECT_FAILURES._value.get() - failures0 >= 3, 15,
                     what="several failed attempts (retries)")  # fmt: skip
            warnings = [x for x in caplog.records if "broker unavailable" in x.getMessage()]
            assert len(warnings) == 1
            if case == "broker_down":
                broker.start()
                wait_for(n.mqtt.connected.is_set, 15, what="connected once the broker is up")
                rec = recorder_factory(broker)
                wait_for(lambda: rec.get("sentri/lab/cam0/person/occupancy") == b"ON", 10,
                         what="retained state published during the outage")  # fmt: skip
                assert any("mqtt connected" in x.getMessage() for x in caplog.records)
        finally:
            n.stop()
    finally:
        if broker.proc is not None:
            broker.stop()


@pytest.mark.parametrize("url", ["http://broker:1883", "mqtt://", "ws://host:9001"])
def test_bad_mqtt_url_names_the_field(url):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as ei:
        NotifierConfig.model_validate({"mqtt": {"url": url}})
    assert ei.value.errors()[0]["loc"][:2] == ("mqtt", "url")


def test_mqtts_with_a_private_ca(tmp_path, port_factory, redis_url, keys, r):
    """mqtts:// verifies the broker's certificate against notifier.mqtt.ca_file."""
    import datetime
    import ipaddress
    import pwd
    import socket as sock
    import subprocess as sp

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sentri test CA")])
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))  # fmt: skip
    skey = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
              .issuer_name(name).public_key(skey.public_key()).serial_number(2)
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName(
                  [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
              .sign(key, hashes.SHA256()))  # fmt: skip
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(skey.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    port = port_factory()
    conf = tmp_path / "tls.conf"
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
        f"cafile {tmp_path / 'ca.pem'}", f"certfile {tmp_path / 'server.pem'}",
        f"keyfile {tmp_path / 'server.key'}", "",
    ]))  # fmt: skip
    proc = sp.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stdout=sp.DEVNULL, stderr=sp.DEVNULL)
    try:

        def listening() -> bool:
            try:
                sock.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, 10, what="mosquitto tls")
        for ca_file, ok in ((str(tmp_path / "ca.pem"), True), (None, False)):
            cfg = NotifierConfig.model_validate({"mqtt": {
                "url": f"mqtts://127.0.0.1:{port}", "ca_file": ca_file, "client_id": f"t{ok}",
                "reconnect_min_s": 1, "reconnect_max_s": 1}})  # fmt: skip
            n = Notifier(cfg, r, connect(redis_url, decode=False), keys).start()
            try:
                if ok:
                    wait_for(n.mqtt.connected.is_set, 10, what="TLS connection")
                else:  # an unknown CA is refused (and retried, not fatal)
                    from services.notifier import metrics

                    f0 = metrics.MQTT_CONNECT_FAILURES._value.get()
                    wait_for(lambda f0=f0: metrics.MQTT_CONNECT_FAILURES._value.get() > f0, 10,
                             what="refused certificate")  # fmt: skip
                    assert not n.mqtt.connected.is_set()
            finally:
                n.stop()
    finally:
        proc.terminate()
        proc.wait(10)


def test_occupancy_corrected_when_object_left_never_comes(
    broker, recorder_factory, redis_url, keys, r
):
    """The replica that announced a track was killed: no object_left.  A track absent
    from the camera's latest detections for occupancy_stale_s stops counting."""
    clock = [1_767_225_600.0]
    cfg = NotifierConfig.model_validate(
        {"mqtt": {"url": broker.url, "discovery_refresh_s": 0.5}, "occupancy_stale_s": 30}
    )
    rec = recorder_factory(broker)
    n = Notifier(cfg, r, connect(redis_url, decode=False), keys, clock=lambda: clock[0]).start()
    try:
        wait_for(n.mqtt.connected.is_set, 10, what="connected")
        for tid in (1, 2):
            n.handle({**event("object_entered", track_id=tid), "id": "0-1"})
        wait_for(lambda: rec.get("sentri/lab/cam0/person/count") == b"2", 10, what="2 in view")

        def detections(track_ids):
            r.set(keys.latest("detections", CAM), json.dumps({
                "type": "detection", "camera_id": CAM, "ts": int(clock[0] * 1000),
                "objects": [{"class": "person", "track_id": t} for t in track_ids]}))  # fmt: skip

        detections([2, 9])  # track 1 is gone (its replica died), 2 is still there
        n._reconcile_occupancy()
        clock[0] += 20
        detections([2, 9])
        n._reconcile_occupancy()
        assert rec.get("sentri/lab/cam0/person/count") == b"2"  # not yet: 20 s < 30 s
        clock[0] += 15
        detections([2])
        n._reconcile_occupancy()
        wait_for(lambda: rec.get("sentri/lab/cam0/person/count") == b"1", 10, what="corrected")
        assert rec.get("sentri/lab/cam0/person/occupancy") == b"ON"
        # The camera stops producing detections altogether: empty after the window.
        clock[0] += 31
        n._reconcile_occupancy()
        clock[0] += 31
        n._reconcile_occupancy()
        wait_for(lambda: rec.get("sentri/lab/cam0/person/occupancy") == b"OFF", 10, what="OFF")
    finally:
        n.stop()

"""Signed webhooks against a real HTTP receiver on loopback: outage, dead letters, filters."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from services.notifier.config import EventFilter, NotifierConfig, Schedule, WebhookConfig
from services.notifier.service import Notifier
from services.notifier.webhooks import DeadLetters, WebhookSender, address_refused, pin, verify
from shared.redisutil import connect, publish_record
from tests.helpers import wait_for

SECRET = "s3cret-key-of-some-length"


class Receiver:
    """A webhook endpoint that checks every signature independently of the notifier."""

    def __init__(self, port: int, status: int = 200) -> None:
        self.port, self.status = port, status
        self.ids: Counter[str] = Counter()
        self.bad_signatures = 0
        self.requests = 0
        self.hosts: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ts = self.headers.get("X-Sentri-Timestamp", "")
                want = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body,
                                        hashlib.sha256).hexdigest()  # fmt: skip
                ok = hmac.compare_digest(want, self.headers.get("X-Sentri-Signature", ""))
                fresh = abs(time.time() - int(ts or 0)) < 300
                rec.requests += 1
                rec.hosts.append(self.headers.get("Host", ""))
                if not (ok and fresh):
                    rec.bad_signatures += 1
                    self.send_response(401)
                else:
                    event = json.loads(body)
                    assert self.headers["X-Sentri-Event-Id"] == event["event_id"]
                    if rec.status == 200:
                        rec.ids[event["event_id"]] += 1
                    self.send_response(rec.status)
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def event(**kw) -> dict:
    return {"type": "zone_entered", "event_id": uuid.uuid4().hex, "camera_id": "lab/cam0",
            "client_id": "lab", "ts": int(time.time() * 1000), "class": "person",
            "track_id": 1, "zone": "drive", **kw}  # fmt: skip


@pytest.fixture
def run_notifier(r, redis_url, keys):
    started = []

    def start(webhooks: list[dict]) -> Notifier:
        cfg = NotifierConfig.model_validate({"webhooks": webhooks, "consumer": "t"})
        n = Notifier(cfg, r, connect(redis_url, decode=False), keys).start()
        t = threading.Thread(target=n.run, daemon=True)
        t.start()
        started.append((n, t))
        return n

    yield start
    for n, t in started:
        n.stop()
        t.join(10)


def hook(port: int, **kw) -> dict:
    return {"name": "recv", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
            "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "max_attempts": 100, **kw}  # fmt: skip


def outage_then_recovery(r, keys, run_notifier, port_factory, down_s: float) -> None:
    port = port_factory()
    n = run_notifier([hook(port)])
    sender = n.senders[0]
    sent = [event() for _ in range(15)]
    for ev in sent:
        publish_record(r, keys, "events", ev, maxlen=1000)
    publish_record(r, keys, "events", sent[3], maxlen=1000)  # a duplicate in the stream
    wait_for(lambda: sender.pending() == 15, 10, what="15 deliveries queued")
    wait_for(lambda: sender.failures >= 3, 10, what="retries while the receiver is down")
    n.stop_event.wait(down_s)  # the receiver stays down this long, on purpose
    rec = Receiver(port)
    try:
        wait_for(lambda: sum(rec.ids.values()) >= 15, 30, what="every event delivered")
        wait_for(lambda: sender.pending() == 0, 10, what="queue drained")
        time.sleep(0.3)  # nothing more may arrive (a duplicate would show up here)
        assert rec.bad_signatures == 0
        assert rec.ids == Counter({ev["event_id"]: 1 for ev in sent})
        assert n.dead_letters.list() == []
    finally:
        rec.close()


def test_receiver_down_then_every_event_exactly_once(r, keys, run_notifier, port_factory):
    outage_then_recovery(r, keys, run_notifier, port_factory, down_s=2.0)


@pytest.mark.faults
def test_receiver_down_30s_then_every_event_exactly_once(r, keys, run_notifier, port_factory):
    outage_then_recovery(r, keys, run_notifier, port_factory, down_s=30.0)


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (403, 1)])
def test_always_refusing_target_ends_in_dead_letters(
    r, keys, run_notifier, port_factory, status, attempts
):
    port = port_factory()
    rec = Receiver(port, status=status)
    try:
        n = run_notifier([hook(port, max_attempts=3)])
        sent = [event() for _ in range(4)]
        for ev in sent:
            publish_record(r, keys, "events", ev, maxlen=1000)
        wait_for(lambda: len(n.dead_letters.list()) == 4, 30, what="4 dead letters")
        dead = n.dead_letters.list()
        assert {d["event_id"] for d in dead} == {ev["event_id"] for ev in sent}
        assert all(d["attempts"] == attempts and d["error"] == f"HTTP {status}" for d in dead)
        assert dead[0]["webhook"] == "recv" and dead[0]["event"]["camera_id"] == "lab/cam0"
        assert n.senders[0].pending() == 0
        assert rec.requests == 4 * attempts and rec.bad_signatures == 0
    finally:
        rec.close()


def test_filters_route_events_per_webhook(r, keys, run_notifier, port_factory):
    p1, p2 = port_factory(), port_factory()
    rec1, rec2 = Receiver(p1), Receiver(p2)
    try:
        run_notifier([
            hook(p1, name="zones", filter={"types": ["zone_entered"], "zones": ["drive"]}),
            hook(p2, name="cars", filter={"classes": ["car"], "cameras": ["lab/cam0"]}),
        ])  # fmt: skip
        a = event()
        b = event(zone="porch")
        c = event(type="line_crossed", zone=None, line="door", **{"class": "car"})
        d = event(type="object_entered", zone=None, camera_id="other/cam1", **{"class": "car"})
        for ev in (a, b, c, d):
            publish_record(r, keys, "events", ev, maxlen=1000)
        wait_for(lambda: rec1.ids and rec2.ids, 10, what="deliveries")
        time.sleep(0.3)
        assert set(rec1.ids) == {a["event_id"]}
        assert set(rec2.ids) == {c["event_id"]}
    finally:
        rec1.close()
        rec2.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://100.100.100.200/",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://[::ffff:169.254.169.254]/",
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http:///nohost",
    ],
)
def test_refused_urls_name_the_field(url):
    with pytest.raises(ValidationError) as ei:
        NotifierConfig.model_validate({"webhooks": [{"url": url}]})
    assert "url" in str(ei.value)


def test_internal_addresses_allowed_explicitly():
    w = WebhookConfig(url="http://169.254.169.254/x", allow_internal=True)
    with pytest.raises(ValidationError, match="secret"):
        NotifierConfig.model_validate(
            {"webhooks": [{"url": "http://127.0.0.1/", "secret": "short"}]}
        )
    assert w.allow_internal
    assert address_refused(__import__("ipaddress").ip_address("127.0.0.1")) is None
    assert address_refused(__import__("ipaddress").ip_address("192.168.1.5")) is None


def test_schedule_and_verify():
    night = Schedule(days=["fri"], start="22:00", end="06:00")
    assert night.active(datetime(2026, 11, 27, 23, 0))  # Friday 23:00
    assert night.active(datetime(2026, 11, 28, 5, 59))  # Saturday 05:59, Friday's night
    assert not night.active(datetime(2026, 11, 28, 6, 0))
    assert not night.active(datetime(2026, 11, 28, 23, 0))  # Saturday night
    f = EventFilter(schedule=[night])
    assert not f.matches(event(), datetime(2026, 11, 27, 12, 0))
    with pytest.raises(ValidationError):
        Schedule(start="25:00")
    with pytest.raises(ValidationError):
        EventFilter(types=["nonsense"])
    body = b'{"a":1}'
    sig = "v1=" + hmac.new(b"k", b"1000." + body, hashlib.sha256).hexdigest()
    assert verify(b"k", "1000", body, sig, now=1100)
    assert not verify(b"k", "1000", body, sig, now=1400)  # outside the 300 s window
    assert not verify(b"k", "1000", body + b" ", sig, now=1000)


def test_webhook_added_in_redis_applies_without_restart_and_dead_letter_retry(
    r, keys, run_notifier, port_factory
):
    """A webhook added through the store (what the API does) is used within a second;
    a dead letter sent again is delivered once the target accepts."""
    from services.notifier.webhooks import WebhookStore

    port = port_factory()
    rec = Receiver(port, status=503)
    try:
        n = run_notifier([])
        store = WebhookStore(r, keys)
        store.put(WebhookConfig.model_validate(hook(port, name="dash", max_attempts=2)))
        wait_for(lambda: [s.cfg.name for s in n.senders] == ["dash"], 10, what="webhook loaded")
        ev = event()
        publish_record(r, keys, "events", ev, maxlen=1000)
        dead = wait_for(lambda: n.dead_letters.list(), 20, what="dead letter")[0]
        assert dead["event_id"] == ev["event_id"] and dead["attempts"] == 2
        rec.status = 200
        store.requeue(n.dead_letters.pop(dead["id"]))
        wait_for(lambda: rec.ids.get(ev["event_id"]) == 1, 20, what="retried delivery")
        assert n.dead_letters.list() == []
        # Deleting it stops its sender.
        store.delete("dash")
        wait_for(lambda: n.senders == [], 10, what="webhook removed")
    finally:
        rec.close()


def test_garbage_in_the_stream_is_acked_and_the_notifier_keeps_going(
    r, keys, run_notifier, port_factory
):
    port = port_factory()
    rec = Receiver(port)
    try:
        n = run_notifier([hook(port)])
        stream = keys.stream("events")
        r.xadd(stream, {"type": "x", "data": "{not json"})
        r.xadd(stream, {"data": '{"type": "zone_entered", "camera_id": 7, "event_id": ["a"]}'})
        r.xadd(stream, {"data": "[1, 2, 3]"})
        good = event()
        publish_record(r, keys, "events", good, maxlen=1000)
        wait_for(lambda: rec.ids.get(good["event_id"]) == 1, 10, what="good event delivered")
        wait_for(lambda: n.consumer.pending_count() == 0, 10, what="everything acked")
    finally:
        rec.close()


def test_events_a_dead_notifier_read_are_taken_over(r, redis_url, keys, port_factory):
    """At least once: notifier A reads events and dies before handling them; B claims
    them after claim_idle_s and delivers each exactly once."""
    port = port_factory()
    rec = Receiver(port)
    try:
        cfg_a = NotifierConfig.model_validate({"webhooks": [hook(port)], "consumer": "a"})
        a = Notifier(cfg_a, r, connect(redis_url, decode=False), keys)
        sent = [event() for _ in range(5)]
        for ev in sent:
            publish_record(r, keys, "events", ev, maxlen=1000)
        assert len(a.consumer.read(count=100, block_ms=1000)) == 5  # read, never acked: "dies"
        cfg_b = NotifierConfig.model_validate(
            {"webhooks": [hook(port)], "consumer": "b", "claim_idle_s": 0.5}
        )
        b = Notifier(cfg_b, r, connect(redis_url, decode=False), keys).start()
        t = threading.Thread(target=b.run, daemon=True)
        t.start()
        try:
            wait_for(lambda: sum(rec.ids.values()) == 5, 20, what="taken over and delivered")
            wait_for(lambda: b.consumer.pending_count() == 0, 10, what="all acked")
            assert rec.ids == Counter({ev["event_id"]: 1 for ev in sent})
        finally:
            b.stop()
            t.join(10)
    finally:
        rec.close()


@pytest.mark.faults
def test_notifier_killed_during_an_outage_loses_nothing(
    tmp_path, r, redis_url, prefix, keys, port_factory
):
    """kill -9 while deliveries wait for a down receiver; a new notifier process sends
    each event exactly once when the receiver comes up (the queue lives in Redis)."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    port = port_factory()
    cfg = tmp_path / "n.yaml"
    cfg.write_text(yaml.safe_dump({
        "redis": {"url": redis_url, "prefix": prefix},
        "notifier": {"consumer": "n", "webhooks": [hook(port, timeout_s=1)]},
    }))  # fmt: skip

    def start():
        out = open(tmp_path / "n.log", "ab")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "services.notifier", "--config", str(cfg)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ})  # fmt: skip

    proc = start()
    from services.notifier.webhooks import queue_keys

    due, _ = queue_keys(keys, "recv")
    try:
        wait_for(lambda: r.exists(keys.k("notifier", "webhooks", "static")), 20, what="started")
        sent = [event() for _ in range(10)]
        for ev in sent:
            publish_record(r, keys, "events", ev, maxlen=1000)
        wait_for(lambda: r.zcard(due) == 10, 20, what="10 deliveries queued")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start()
        rec = Receiver(port)
        try:
            wait_for(lambda: sum(rec.ids.values()) >= 10, 60, what="every event delivered")
            wait_for(lambda: r.zcard(due) == 0, 10, what="queue drained")
            time.sleep(1)
            assert rec.ids == Counter({ev["event_id"]: 1 for ev in sent})
            assert rec.bad_signatures == 0
        finally:
            rec.close()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_a_webhook_connects_to_the_address_it_checked(r, keys, port_factory):
    """DNS rebinding: a name that answers with an allowed address for the check and a
    metadata address afterwards.  Each delivery resolves once and connects to the
    address it checked, keeping the name in ``Host`` (the HTTP client resolving the
    name again could reach the metadata service)."""
    port = port_factory()
    rec = Receiver(port)
    answers = ["127.0.0.1", "169.254.169.254"]
    asked: list[tuple[str, int]] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return [answers[min(len(asked), len(answers)) - 1]]

    cfg = WebhookConfig(name="rebind", url=f"http://hooks.sentri.test:{port}/hook", secret=SECRET)
    sender = WebhookSender(r, keys, cfg, DeadLetters(r, keys), resolver=rebinding)
    try:
        delivered, _, error = sender._send(event())
        assert (delivered, error) == (True, "")
        assert rec.hosts == [f"hooks.sentri.test:{port}"] and rec.bad_signatures == 0
        assert asked == [("hooks.sentri.test", port)]  # resolved once, by the check
        delivered, retry, error = sender._send(event())  # the name now points inward
        assert not delivered and not retry
        assert "169.254.169.254 is a cloud metadata address" in error
        assert rec.requests == 1
    finally:
        rec.close()


def test_pinned_urls_keep_credentials_port_and_tls_name():
    def one(addr: str):
        return lambda host, port: [addr]

    p = pin("https://u:pw@hooks.example.com/x?a=1", False, one("203.0.113.7"))
    assert p.url == "https://u:pw@203.0.113.7/x?a=1"
    assert p.headers == {"Host": "hooks.example.com"}
    assert p.extensions == {"sni_hostname": "hooks.example.com"}  # certificate checked for it
    p = pin("http://hooks.example.com:8080/x", False, one("2001:db8::1"))
    assert p.url == "http://[2001:db8::1]:8080/x" and p.extensions == {}
    with pytest.raises(OSError):
        pin("http://hooks.example.com/x", False, lambda host, port: [])
    literal = pin("http://127.0.0.1:9/x", False, one("169.254.169.254"))
    assert literal.url == "http://127.0.0.1:9/x"  # a literal address is not resolved

"""Fixtures: a real mosquitto broker on a free loopback port, an MQTT recorder."""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.helpers import wait_for

MOSQUITTO = "/usr/sbin/mosquitto"


class Broker:
    def __init__(self, tmp: Path, port: int, user: str | None = None, password: str | None = None):
        self.tmp, self.port, self.user, self.password = tmp, port, user, password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        creds = f"{self.user}:{self.password}@" if self.user else ""
        return f"mqtt://{creds}127.0.0.1:{self.port}"

    def start(self) -> Broker:
        conf = self.tmp / f"mosquitto-{self.port}.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 # As root mosquitto would switch to its own user, who cannot read tmp.
                 f"user {pwd.getpwuid(os.getuid()).pw_name}"]  # fmt: skip
        if self.user:
            pw = self.tmp / "passwd"
            subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), self.user, self.password],
                           check=True, capture_output=True)  # fmt: skip
            os.chmod(pw, 0o600)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n")
        self.log = open(self.tmp / f"mosquitto-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)  # fmt: skip

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_for(listening, 10, what="mosquitto listening")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def broker(tmp_path, port_factory) -> Iterator[Broker]:
    b = Broker(tmp_path, port_factory()).start()
    yield b
    b.stop()


class Recorder:
    """A subscriber that keeps every message (latest per topic, and all in order)."""

    def __init__(self, broker: Broker, topics=("#",)) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.latest: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rec-{time.time_ns()}")
        if broker.user:
            self.c.username_pw_set(broker.user, broker.password)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *_: [c.subscribe(t, qos=1) for t in topics]
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))
            self.latest[msg.topic] = msg.payload

    def json_on(self, topic_suffix: str) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(topic_suffix)]

    def get(self, topic: str) -> bytes | None:
        with self.lock:
            return self.latest.get(topic)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture
def recorder_factory():
    made = []

    def make(broker: Broker, topics=("#",)) -> Recorder:
        rec = Recorder(broker, topics)
        made.append(rec)
        return rec

    yield make
    for rec in made:
        rec.close()

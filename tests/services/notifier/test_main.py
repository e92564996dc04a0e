"""`sentri notifier` start-up: invalid config fails naming the field; idles cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

from services.notifier.__main__ import main
from tests.helpers import wait_for


def test_invalid_config_names_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SENTRI_NOTIFIER__MQTT__URL", "http://broker")
    assert main(["--redis-url", "redis://127.0.0.1:1"]) == 2
    assert "notifier.mqtt.url" in capsys.readouterr().err
    monkeypatch.delenv("SENTRI_NOTIFIER__MQTT__URL")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  cameras:\n    a/b:\n      zones:\n        - id: z\n"
                   "          points: [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]\n")  # fmt: skip
    assert main(["--config", str(bad), "--redis-url", "redis://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "rules.cameras.a/b.zones.0.points" in err and "self-intersecting" in err


def test_without_outputs_it_says_so_once_and_stops_on_sigterm(tmp_path, redis_url):
    log = tmp_path / "n.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.notifier", "--redis-url",
                                 redis_url], stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_for(lambda: "idling" in log.read_text(), 20, what="idle message")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    assert log.read_text().count("idling") == 1

"""Configuration of the analyst, and the ``python -m services.analyst`` entry point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.analyst.__main__ import build_parser, load_configs, main
from services.analyst.config import AnalystConfig, GeminiProviderConfig, OfflineProviderConfig
from shared.config import ConfigError, load_section
from shared.redisutil import parse_entry, publish_record
from shared.registry import register_client
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_are_sane():
    cfg = AnalystConfig()
    assert isinstance(cfg.provider, GeminiProviderConfig)
    assert cfg.provider.model == "gemini-2.5-flash"
    assert cfg.event_types == ["object_entered", "face_recognized"]
    assert {"person", "car", "truck", "bus", "motorcycle", "bicycle"} == set(cfg.trigger_classes)
    assert cfg.process_by_default and cfg.max_image_side == 640
    for name, field in AnalystConfig.model_fields.items():
        assert field.description, f"{name} has no description"


def test_provider_selected_by_type_from_env_and_yaml(tmp_path):
    env = {"SENTRI_ANALYST__PROVIDER__TYPE": "offline", "SENTRI_ANALYST__MIN_INTERVAL_S": "12"}
    cfg = load_section(AnalystConfig, "analyst", env=env)
    assert isinstance(cfg.provider, OfflineProviderConfig) and cfg.min_interval_s == 12
    yml = tmp_path / "sentri.yaml"
    yml.write_text(
        "analyst:\n  provider:\n    type: gemini\n    model: gemini-2.5-pro\n"
        "    base_url: http://127.0.0.1:9/\n  daily_budget: 50\n"
    )
    cfg = load_section(AnalystConfig, "analyst", config_file=yml, env={})
    assert isinstance(cfg.provider, GeminiProviderConfig)
    assert (cfg.provider.model, cfg.daily_budget) == ("gemini-2.5-pro", 50)


@pytest.mark.parametrize(
    "env, field",
    [
        ({"SENTRI_ANALYST__MIN_INTERVAL_S": "0"}, "analyst.min_interval_s"),
        ({"SENTRI_ANALYST__PROVIDER__TYPE": "openai"}, "analyst.provider"),
        ({"SENTRI_ANALYST__PROVIDER__TYPE": "offline", "SENTRI_ANALYST__PROVIDER__MODEL": "x"}, "analyst.provider.offline.model"),
        ({"SENTRI_ANALYST__THREAT": "high"}, "analyst.threat"),
        ({"SENTRI_ANALYST__BACKOFF_BASE_S": "10", "SENTRI_ANALYST__BACKOFF_MAX_S": "5"}, "backoff_max_s"),
    ],
)  # fmt: skip
def test_invalid_config_names_the_field(env, field):
    with pytest.raises(ConfigError) as info:
        load_section(AnalystConfig, "analyst", env=env)
    assert field in str(info.value)


def test_cli_overrides_provider_and_model():
    args = build_parser().parse_args(["--provider", "offline", "--redis-url", "redis://x:1/0"])
    _, redis_cfg, _, analyst = load_configs(args, env={})
    assert analyst.provider.type == "offline" and redis_cfg.url == "redis://x:1/0"
    args = build_parser().parse_args(["--model", "gemini-2.5-flash-lite"])
    _, _, _, analyst = load_configs(args, env={"REDIS_URL": "redis://y:2/0"})
    assert analyst.provider.model == "gemini-2.5-flash-lite"
    with pytest.raises(ConfigError, match="model"):
        load_configs(build_parser().parse_args(["--model", "bad name!"]), env={})


def test_help_and_bad_config_exit_codes(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config FILE" in out and "--redis-url URL" in out and "GEMINI_API_KEY" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("analyst:\n  daily_budget: -1\n")
    assert main(["--config", str(bad)]) == 2
    assert "analyst.daily_budget" in capsys.readouterr().err


def test_service_process_serves_and_stops_on_sigterm(redis_url, r, keys, prefix, port_factory):
    """The real process: ready line, an analysis from an event, clean exit on SIGTERM."""
    import numpy as np
    import zmq

    from tests.helpers import FramePublisher

    register_client(r, keys, {"client_id": "lab"}, [{"name": "door"}])
    ctx = zmq.Context()
    publisher = FramePublisher(ctx, port_factory())
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SENTRI_") and k != "GEMINI_API_KEY"
    }
    env.update(
        REDIS_URL=redis_url,
        # Quoted: env values are parsed as YAML and a bare "tabc:" would be a mapping.
        SENTRI_REDIS__PREFIX=json.dumps(prefix),
        SENTRI_WORKER__HEARTBEAT_S="0.2",
        SENTRI_GENERAL__LOG_FORMAT="json",
        SENTRI_ANALYST__EVENT_COOLDOWN_S="0",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.analyst", "--ingest-pub", publisher.endpoint],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    stop = threading.Event()
    img = np.full((240, 320, 3), 90, np.uint8)

    def pump() -> None:
        while not stop.wait(0.1):
            publisher.publish("lab/door", img)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    try:

        def ready_line() -> bool:
            assert proc.poll() is None, f"analyst exited {proc.returncode}: {lines}"
            return any('"analyst ready"' in ln for ln in lines)

        wait_for(ready_line, timeout=30, what="ready line")
        ready = json.loads(next(ln for ln in lines if '"analyst ready"' in ln))
        assert ready["provider"] == "offline"  # no GEMINI_API_KEY in its environment
        wait_for(lambda: r.hget(keys.worker_stats("analyst"), "lab/door"), timeout=10, what="stats")

        # The runtime took the camera; the event listener may need one more moment.
        def analysed() -> list:
            publish_record(
                r,
                keys,
                "events",
                {"type": "face_recognized", "camera_id": "lab/door", "name": "Ada"},
                maxlen=100,
                latest=False,
            )
            return r.xrange(keys.stream("analysis"))

        entries = wait_for(analysed, timeout=15, interval=0.5, what="an analysis")
        rec = parse_entry(*entries[0])
        assert rec["provider"] == "offline" and "Recognised: Ada" in rec["summary"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop.set()
        pumper.join(2)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        reader.join(5)
        publisher.close()
        ctx.destroy(linger=0)
    assert any('"analyst stopped"' in ln for ln in lines)
    assert not any('"level": "error"' in ln for ln in lines), "\n".join(lines[-20:])

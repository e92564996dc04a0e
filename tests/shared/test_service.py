"""The command-line wiring every service shares (shared/service.py)."""

from __future__ import annotations

import argparse
import importlib

import pytest

from shared.config import ConfigError
from shared.service import add_service_options, load_service_config

SERVICES = ["archiver", "notifier", "recorder", "analyst"]


@pytest.mark.parametrize("name", SERVICES)
def test_without_redis_each_service_exits_2_with_one_line(name, monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SENTRI_REDIS__URL", raising=False)
    monkeypatch.delenv("SENTRI_CONFIG", raising=False)
    main = importlib.import_module(f"services.{name}.__main__").main
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sentri {name}: redis.url is required: pass --redis-url or set REDIS_URL "
        "(`sentri up` starts a private Redis)"
    ]


@pytest.mark.parametrize("name", SERVICES)
def test_help_lists_the_common_options(name, capsys):
    main = importlib.import_module(f"services.{name}.__main__").main
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--config FILE", "--redis-url URL", "--metrics-port PORT", "--log-level"):
        assert option in out
    assert ("--ingest-pub ENDPOINT" in out) == (name in ("recorder", "analyst"))


def test_common_options_override_file_and_env(tmp_path):
    p = argparse.ArgumentParser()
    add_service_options(p, worker=True)
    yml = tmp_path / "s.yaml"
    yml.write_text("general:\n  log_level: ERROR\nworker:\n  replica_id: from-file\n")
    args = p.parse_args(["--config", str(yml), "--redis-url", "redis://h:1/0",
                         "--log-level", "DEBUG", "--ingest-pub", "tcp://i:5557"])  # fmt: skip
    cfg = load_service_config(args, {}, env={"REDIS_URL": "redis://env:2/0"})
    assert cfg.redis.url == "redis://h:1/0"
    assert cfg.general.log_level == "DEBUG"
    assert (cfg.worker.ingest_pub, cfg.worker.replica_id) == ("tcp://i:5557", "from-file")
    yml.write_text("nonsense: {}\n")
    with pytest.raises(ConfigError, match="nonsense"):
        load_service_config(args, {}, env={})

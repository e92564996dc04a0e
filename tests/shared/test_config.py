from __future__ import annotations

import pytest

from shared.config import ConfigError, IngestConfig, RedisConfig, WorkerConfig, load_section


def test_defaults_env_yaml_priority(tmp_path) -> None:
    cfg_file = tmp_path / "sentri.yaml"
    cfg_file.write_text("ingest:\n  frame_port: 6000\n  pub_port: 6002\n")
    env = {"SENTRI_INGEST__PUB_PORT": "7002", "SENTRI_INGEST__INSECURE": "false"}
    cfg = load_section(IngestConfig, "ingest", config_file=cfg_file, env=env)
    assert (cfg.frame_port, cfg.control_port, cfg.pub_port, cfg.insecure) == (
        6000,
        5556,
        7002,
        False,
    )
    cfg = load_section(
        IngestConfig, "ingest", config_file=cfg_file, env=env, overrides={"pub_port": 1}
    )
    assert cfg.pub_port == 1


def test_redis_url_env() -> None:
    assert (
        load_section(RedisConfig, "redis", env={"REDIS_URL": "redis://x:1/0"}).url
        == "redis://x:1/0"
    )
    env = {"REDIS_URL": "redis://x:1/0", "SENTRI_REDIS__URL": "redis://y:2/0"}
    assert load_section(RedisConfig, "redis", env=env).url == "redis://y:2/0"


def test_errors_name_the_field(tmp_path) -> None:
    with pytest.raises(
        ConfigError, match=r"worker\.max_batch: .*less than or equal to 64 \(got 1000\)"
    ):
        load_section(WorkerConfig, "worker", env={"SENTRI_WORKER__MAX_BATCH": "1000"})
    with pytest.raises(ConfigError, match=r"ingest\.frame_prot: Extra inputs are not permitted"):
        load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__FRAME_PROT": "1"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest: [1, 2")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_section(IngestConfig, "ingest", config_file=bad, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_section(IngestConfig, "ingest", config_file=tmp_path / "nope.yaml", env={})


def test_env_values_that_look_like_yaml_maps_stay_strings() -> None:
    cfg = load_section(RedisConfig, "redis", env={"SENTRI_REDIS__PREFIX": "sentri:"})
    assert cfg.prefix == "sentri:"
    cfg = load_section(WorkerConfig, "worker", env={"SENTRI_WORKER__REPLICA_ID": "2024-01-01"})
    assert cfg.replica_id == "2024-01-01"


def test_ingest_is_secure_by_default_and_authorized_keys_parse() -> None:
    assert IngestConfig().insecure is False
    assert load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__INSECURE": "true"}).insecure
    one = load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__AUTHORIZED_KEYS": "/k/dir"})
    assert one.authorized_keys == ["/k/dir"]  # one string is one entry (a compose/k8s value)
    many = {"SENTRI_INGEST__AUTHORIZED_KEYS": "[/k/a.public, /k/dir]"}
    assert load_section(IngestConfig, "ingest", env=many).authorized_keys == [
        "/k/a.public",
        "/k/dir",
    ]
    with pytest.raises(ConfigError, match=r"ingest\.authorized_keys: .*entries must be"):
        load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__AUTHORIZED_KEYS": "['  ']"})
    with pytest.raises(ConfigError, match=r"ingest\.authorized_keys_rescan_s"):
        load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__AUTHORIZED_KEYS_RESCAN_S": "-1"})

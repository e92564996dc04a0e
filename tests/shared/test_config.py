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


def test_an_unknown_top_level_section_is_refused_by_name(tmp_path) -> None:
    from shared.config import ConfigError, RedisConfig, load_config

    f = tmp_path / "c.yaml"
    f.write_text("redis: {prefix: 'x:'}\ndetecter: {confidence: 0.5}\n")
    with pytest.raises(ConfigError, match="unknown section.*detecter"):
        load_section(RedisConfig, "redis", config_file=f)
    with pytest.raises(ConfigError, match="detecter"):
        load_config({"redis": RedisConfig}, config_file=f, env={})
    # A section no service reads is refused too: `mqtt:` belongs under `notifier:`.
    f.write_text("mqtt: {url: 'mqtt://broker:1883'}\n")
    with pytest.raises(ConfigError, match="unknown section.*mqtt"):
        load_section(RedisConfig, "redis", config_file=f)


def test_load_config_reads_every_section_of_a_process_at_once(tmp_path) -> None:
    from shared.config import RedisConfig, WorkerConfig, load_config

    f = tmp_path / "c.yaml"
    f.write_text("redis: {prefix: 'y:'}\nworker: {max_batch: 3}\n")
    cfg = load_config(
        {"redis": RedisConfig, "worker": WorkerConfig},
        config_file=f,
        env={"SENTRI_WORKER__RCV_HWM": "7"},
        overrides={"redis": {"url": "redis://127.0.0.1:1/0"}},
    )
    assert cfg.redis.prefix == "y:" and cfg.redis.url == "redis://127.0.0.1:1/0"
    assert (cfg.worker.max_batch, cfg.worker.rcv_hwm) == (3, 7)
    assert cfg.config_file == str(f)


def test_one_env_field_of_the_default_provider_merges_with_its_defaults() -> None:
    from services.analyst.config import AnalystConfig

    cfg = load_section(
        AnalystConfig,
        "analyst",
        env={"GEMINI_API_KEY": "k", "SENTRI_ANALYST__PROVIDER__BASE_URL": "http://127.0.0.1:9"},
    )
    assert cfg.provider.type == "gemini" and cfg.provider.base_url == "http://127.0.0.1:9"
    assert cfg.provider.model == "gemini-2.5-flash"  # the other defaults are kept
    off = load_section(AnalystConfig, "analyst", env={"SENTRI_ANALYST__PROVIDER__TYPE": "offline"})
    assert off.provider.type == "offline"


def test_gateway_with_a_config_file_reads_its_faces_section(tmp_path, r, keys) -> None:
    """``sentri gateway --config f.yaml``: the face gallery uses the file's ``faces:``."""
    from types import SimpleNamespace

    from services.gateway.api.faces import _gallery
    from services.gateway.config import load_settings

    f = tmp_path / "gw.yaml"
    f.write_text("faces: {tolerance: 0.41}\n")
    load_settings(f, env={})
    gw = SimpleNamespace(r=r, keys=keys, extras={})
    assert _gallery(gw).config.tolerance == 0.41


def test_ingest_io_threads_auto_follows_the_cores_and_an_explicit_value_wins(monkeypatch) -> None:
    import shared.config

    for cores, want in ((1, 1), (2, 1), (4, 2), (8, 4), (64, 4)):
        monkeypatch.setattr(shared.config.os, "cpu_count", lambda c=cores: c)
        assert IngestConfig().zmq_io_threads() == want
    monkeypatch.setattr(shared.config.os, "cpu_count", lambda: None)
    assert IngestConfig().zmq_io_threads() == 1
    env = {"SENTRI_INGEST__IO_THREADS": "3"}
    assert load_section(IngestConfig, "ingest", env=env).zmq_io_threads() == 3
    with pytest.raises(ConfigError, match="io_threads"):
        load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__IO_THREADS": "17"})

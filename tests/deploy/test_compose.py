"""docker-compose.yml (+ GPU override): valid, secure, scalable, and consistent with
the real config models and the real `sentri` CLI."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from tests.deploy.support import (
    CENTRAL,
    COMPOSE,
    COMPOSE_GPU,
    DEPLOY,
    DUMMY_ENV,
    WORKERS,
    MissingVariable,
    cli_help_all,
    config_problems,
    docker_compose,
    load_compose,
    section_models,
    sentri_commands,
    service_env,
)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def compose_gpu() -> dict:
    return load_compose(COMPOSE, COMPOSE_GPU)


@pytest.fixture(scope="module")
def models():
    return section_models()


def _compose_config(tmp_path, files, env):
    cli = docker_compose()
    if cli is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env_file = tmp_path / "empty.env"  # a developer's deploy/.env must not leak in
    env_file.write_text("")
    args = [*cli, "--env-file", str(env_file)]
    for f in files:
        args += ["-f", str(f)]
    clean = {k: v for k, v in os.environ.items() if k not in DUMMY_ENV}
    return subprocess.run(
        [*args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        cwd=DEPLOY,
    )


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu"])
def test_docker_compose_config_validates(tmp_path, files) -> None:
    res = _compose_config(tmp_path, files, DUMMY_ENV)
    assert res.returncode == 0, res.stderr
    rendered = yaml.safe_load(res.stdout)
    ours = load_compose(*files)
    assert set(rendered["services"]) == set(ours["services"])
    # our reading of the file (anchors, merges, variables) is what compose sees
    for name, svc in ours["services"].items():
        assert service_env(rendered["services"][name]) == service_env(svc), name
    if len(files) == 2:
        assert rendered["services"]["detector"]["environment"]["SENTRI_DETECTOR__DEVICE"] == "cuda"


def test_compose_refuses_to_start_without_redis_password(tmp_path) -> None:
    res = _compose_config(tmp_path, (COMPOSE,), {"GRAFANA_ADMIN_PASSWORD": "x"})
    assert res.returncode != 0
    assert "set REDIS_PASSWORD in deploy/.env" in res.stderr + res.stdout


def test_missing_password_is_an_error_in_our_reading_too() -> None:
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        load_compose(COMPOSE, env={"GRAFANA_ADMIN_PASSWORD": "x"})
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        load_compose(COMPOSE, env={"REDIS_PASSWORD": "", "GRAFANA_ADMIN_PASSWORD": "x"})


def test_every_service_runs_a_real_sentri_command(compose) -> None:
    commands = sentri_commands()
    used: dict[str, list[str]] = {}
    for name in CENTRAL:
        svc = compose["services"][name]
        cmd = svc["command"]
        assert isinstance(cmd, list) and cmd, f"{name}: command must be an exec-form list"
        assert cmd[0] in commands, f"{name}: `sentri {cmd[0]}` is not a sentri command {commands}"
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        used[name] = cmd
    # and each one really starts: `sentri <command> --help` exits 0 with a usage text
    results = cli_help_all(sorted({tuple(c) for c in used.values()}, key=str))
    for key, res in results.items():
        assert res.returncode == 0, f"sentri {key} --help failed:\n{res.stderr[-2000:]}"
        assert "usage" in res.stdout.lower(), f"sentri {key} --help printed no usage"


def test_demo_agent_options_exist_in_sentri_edge(compose) -> None:
    svc = compose["services"]["edge-demo"]
    assert svc["profiles"] == ["demo"]
    # the central image (it has the ultralytics demo photos), entrypoint the agent
    assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
    assert svc["entrypoint"][-1] == "sentri-edge"
    res = cli_help_all([[]], program="sentri-edge")[""]
    assert res.returncode == 0, res.stderr[-2000:]
    flags = [a for a in svc["command"] if a.startswith("--")]
    assert "--server" in flags
    for flag in flags:
        assert flag in res.stdout, f"sentri-edge has no option {flag}"
    # the agent reaches ingest the way a camera machine does: through the edge network,
    # with CURVE: ingest's public key pinned, its own key pair (tests/deploy/test_stack
    # runs the key provisioning and this command for real)
    assert svc["networks"] == ["edge"]
    cmd = svc["command"]
    assert cmd[cmd.index("--server") + 1] == "ingest"
    key_dir = cmd[cmd.index("--key-dir") + 1]
    assert cmd[cmd.index("--server-key") + 1] == f"{key_dir}/ingest.public"
    assert "--insecure" not in cmd


def test_ingest_requires_curve_with_keys_on_volumes(compose) -> None:
    ingest = compose["services"]["ingest"]
    env = service_env(ingest)
    assert env.get("SENTRI_INGEST__INSECURE", "false").lower() == "false"
    assert "--insecure" not in ingest["command"]
    mounts = dict(v.split(":", 1)[::-1] for v in ingest["volumes"])
    # the server key pair (<state_dir>/keys) survives a re-creation of the container
    assert mounts[env["SENTRI_GENERAL__STATE_DIR"]] == "ingest-state"
    assert mounts[env["SENTRI_INGEST__AUTHORIZED_KEYS"] + ":ro"] == "agent-keys"
    assert {"ingest-state", "agent-keys"} <= set(compose["volumes"])
    # nothing else gets ingest's state (its secret key): demo-keys reads it, read-only
    for name, svc in compose["services"].items():
        vols = [v for v in svc.get("volumes") or [] if v.startswith("ingest-state:")]
        if name == "demo-keys":
            assert vols == ["ingest-state:/var/lib/sentri/state:ro"]
        elif name != "ingest":
            assert not vols, name


def test_workers_can_scale(compose) -> None:
    for name in WORKERS:
        svc = compose["services"][name]
        assert "container_name" not in svc, f"{name}: container_name prevents --scale"
        assert "ports" not in svc, f"{name}: published ports prevent --scale"
        assert "hostname" not in svc, name
    for name, svc in compose["services"].items():
        assert "container_name" not in svc, f"{name}: container_name breaks project isolation"


def test_sentri_env_names_and_values_match_the_config_models(compose, compose_gpu, models) -> None:
    problems = []
    for label, doc in (("compose", compose), ("compose+gpu", compose_gpu)):
        for name, svc in doc["services"].items():
            problems += config_problems(service_env(svc), models, f"{label}:{name}")
    assert not problems, "\n".join(problems)
    # the checker itself catches a typo and a bad value
    assert config_problems({"SENTRI_DETECTOR__DEVICEE": "cpu"}, models, "x")
    assert config_problems({"SENTRI_DETECTOR__DEVICE": "tpu"}, models, "x")


def test_workers_subscribe_to_ingest_and_share_redis(compose) -> None:
    for name in WORKERS:
        env = service_env(compose["services"][name])
        assert env["SENTRI_WORKER__INGEST_PUB"] == "tcp://ingest:5557", name
        assert env["SENTRI_GENERAL__METRICS_PORT"] == "9100", name
    gw = service_env(compose["services"]["gateway"])
    assert gw["SENTRI_GATEWAY__INGEST_PUB"] == "tcp://ingest:5557"
    ingest = service_env(compose["services"]["ingest"])
    assert ingest["SENTRI_INGEST__BIND_HOST"] == "0.0.0.0"
    # the fan-out is encrypted; its receivers get keys from Redis (no volume needed)
    assert ingest["SENTRI_INGEST__FANOUT_CURVE"] == "on"
    password = DUMMY_ENV["REDIS_PASSWORD"]
    for name in CENTRAL:
        url = service_env(compose["services"][name])["REDIS_URL"]
        assert url == f"redis://:{password}@redis:6379/0", name


def test_redis_has_a_password_persistence_and_no_published_port(compose) -> None:
    redis = compose["services"]["redis"]
    assert "ports" not in redis and "expose" not in redis
    script = " ".join(redis["command"])
    assert "requirepass" in script and "--appendonly yes" in script
    assert service_env(redis)["REDISCLI_AUTH"] == DUMMY_ENV["REDIS_PASSWORD"]
    # the password is not on the command line, where `ps` would show it
    assert DUMMY_ENV["REDIS_PASSWORD"] not in script
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["user"] not in ("root", "0")
    raw = COMPOSE.read_text()
    assert "${REDIS_PASSWORD:?" in raw


def test_only_agent_and_user_facing_ports_are_published(compose) -> None:
    networks = compose["networks"]
    internal = {n for n, spec in networks.items() if (spec or {}).get("internal")}
    assert internal == {"backend"}
    published = {}
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            published.setdefault(name, []).append(str(port).rsplit(":", 1)[-1])
    assert published == {
        "ingest": ["5555", "5556"],
        "gateway": ["5002"],
        "grafana": ["3000"],
        "mosquitto": ["1883"],  # profile mqtt: Home Assistant connects here
    }
    # Redis and the workers live on the internal network only (the analyst also needs
    # a route out to the Gemini API, the notifier to webhook endpoints and brokers,
    # still with nothing published)
    for name in ("redis", "detector", "faces", "recorder", "archiver"):
        assert set(compose["services"][name]["networks"]) == {"backend"}, name
    assert set(compose["services"]["analyst"]["networks"]) == {"backend", "egress"}
    assert set(compose["services"]["notifier"]["networks"]) == {"backend", "egress"}
    assert "127.0.0.1:" in compose["services"]["grafana"]["ports"][0]
    assert "127.0.0.1:" in compose["services"]["mosquitto"]["ports"][0]
    assert compose["services"]["mosquitto"]["profiles"] == ["mqtt"]


#: Services that write or read the media store / the SQLite event store.
STORAGE_USERS = ("detector", "faces", "recorder", "archiver", "gateway")


def test_storage_users_share_one_volume_at_one_path(compose) -> None:
    from shared.config import load_section
    from shared.storage.config import StorageConfig

    seen = set()
    for name in STORAGE_USERS:
        svc = compose["services"][name]
        env = service_env(svc)
        cfg = load_section(StorageConfig, "storage", env=env)
        state_dir = env.get("SENTRI_GENERAL__STATE_DIR", "/var/lib/sentri")
        media = str(cfg.media_root(state_dir))
        db = cfg.db_url(state_dir)
        assert db.startswith("sqlite:////"), (name, db)
        db_file = db[len("sqlite:///") :]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes") or []}
        # both paths lie on a mounted named volume (the root filesystem is read-only)
        for path in (media, db_file):
            where = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
            assert where, f"{name}: {path} is not on a volume ({mounts})"
            assert not any(m.endswith(":ro") for m in svc["volumes"] if m.split(":")[1] in where)
            seen.add((path, mounts[max(where, key=len)], max(where, key=len)))
    # one volume, one mount path, one media dir and one database for all of them
    assert len(seen) == 2, seen
    assert {v for _, v, _ in seen} == {"storage"} and "storage" in compose["volumes"]
    # services that have nothing to do with media/events do not get the volume
    for name in ("ingest", "analyst", "notifier", "redis"):
        vols = compose["services"][name].get("volumes") or []
        assert not any(v.startswith("storage:") for v in vols), name


def test_storage_mount_point_exists_in_the_image_owned_by_sentri(compose) -> None:
    # A fresh named volume copies the image directory's owner: the directory must be
    # created in the image (chown'd to sentri), or the volume is root's and read-only.
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    mkdir = dockerfile.split("RUN mkdir -p", 1)[1].split("&&", 1)[0]
    for v in compose["services"]["gateway"]["volumes"]:
        if v.startswith("storage:"):
            assert v.split(":")[1] in mkdir.replace("\\", " ").split()
    assert "--chown=sentri:sentri /var/lib/sentri /var/lib/sentri" in dockerfile


def test_long_running_services_have_healthchecks(compose) -> None:
    for name, svc in compose["services"].items():
        if name == "edge-demo":
            # serves nothing (ingest reports its liveness): the image's probe is off
            assert svc["healthcheck"] == {"disable": True}
            continue
        if name == "demo-keys":  # one-shot: makes the demo keys, exits, is not restarted
            assert svc["healthcheck"] == {"disable": True} and svc["restart"] == "no"
            continue
        test = (svc.get("healthcheck") or {}).get("test")
        assert test, f"{name}: no healthcheck"
    assert compose["services"]["gateway"]["healthcheck"]["test"][-1].endswith("/healthz")
    for name in CENTRAL:
        deps = compose["services"][name].get("depends_on") or {}
        assert deps.get("redis", {}).get("condition") == "service_healthy", name


def test_gpu_override_reserves_an_nvidia_gpu_for_the_detector(compose_gpu) -> None:
    det = compose_gpu["services"]["detector"]
    devices = det["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert det["build"]["args"]["TORCH_INDEX_URL"] == ""  # CUDA torch from PyPI
    assert det["image"] != compose_gpu["services"]["faces"]["image"]
    # only the detector changes
    cpu = load_compose(COMPOSE)
    for name in set(cpu["services"]) - {"detector"}:
        assert compose_gpu["services"][name] == cpu["services"][name], name


def test_env_example_documents_every_variable_compose_reads() -> None:
    import re

    raw = COMPOSE.read_text() + COMPOSE_GPU.read_text()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", raw))
    example = (DEPLOY / ".env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", example, flags=re.M))
    assert used <= documented, f"not in deploy/.env.example: {sorted(used - documented)}"
    values = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", example, flags=re.M))
    assert values["REDIS_PASSWORD"] == "" and values["GRAFANA_ADMIN_PASSWORD"] == ""

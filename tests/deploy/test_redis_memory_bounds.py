"""Every deployment bounds Redis' memory with a policy that never evicts the streams
(issue 12, item 1): compose and k8s pass ``--maxmemory`` and ``--maxmemory-policy
noeviction``, and a real redis-server accepts exactly those settings."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest
import yaml

from shared.redisutil import SAFE_MAXMEMORY_POLICIES, connect, find_redis_server, free_port
from tests.deploy.support import COMPOSE, K8S
from tests.helpers import wait_for


def _compose_redis_script() -> str:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc["services"]["redis"]["command"][-1]


def _k8s_redis_script() -> str:
    for doc in yaml.safe_load_all((K8S / "base" / "redis.yaml").read_text()):
        if doc and doc["kind"] == "StatefulSet":
            return doc["spec"]["template"]["spec"]["containers"][0]["args"][-1]
    raise AssertionError("no redis StatefulSet")


def _memory_flags(script: str) -> tuple[str, str]:
    line = next(ln for ln in script.splitlines() if "redis-server" in ln)
    # compose escapes $ as $$; the shell then expands ${REDIS_MAXMEMORY:-1gb} to 1gb.
    line = re.sub(r"\$\$?\{REDIS_MAXMEMORY:-([^}]+)\}", r"\1", line)
    words = shlex.split(line)
    return words[words.index("--maxmemory") + 1], words[words.index("--maxmemory-policy") + 1]


@pytest.mark.parametrize(
    "script", [_compose_redis_script, _k8s_redis_script], ids=["compose", "k8s"]
)
def test_deployment_bounds_redis_memory_without_evicting_streams(script, tmp_path) -> None:
    maxmemory, policy = _memory_flags(script())
    assert policy == "noeviction" and policy in SAFE_MAXMEMORY_POLICIES
    # The values are valid for a real redis-server, and they are what it runs with.
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path), "--maxmemory", maxmemory, "--maxmemory-policy", policy],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        r = connect(f"redis://127.0.0.1:{port}/0")
        wait_for(lambda: proc.poll() is not None or _pings(r), 10, what="redis-server up")
        assert proc.poll() is None, "redis-server refused the deployment's memory flags"
        assert int(r.config_get("maxmemory")["maxmemory"]) == 1024**3
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == policy
        r.close()
    finally:
        proc.terminate()
        proc.wait(10)


def _pings(r) -> bool:
    try:
        return bool(r.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False

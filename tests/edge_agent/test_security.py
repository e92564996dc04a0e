"""CURVE: the agent encrypts and authenticates with its own key pair; ingest's
allow-list (shared.security, Redis-backed) decides, with the pending -> approved flow."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.cli import build_parser, load_config, main
from shared.security import AgentKeyStore, CurveAuthenticator, fingerprint, generate_keypair
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def curve_ingest(ingest_factory, r, keys):
    server = generate_keypair()
    store = AgentKeyStore(r, keys)
    ing = ingest_factory(curve=server, authenticator=lambda ctx: CurveAuthenticator(ctx, store))
    return ing, server[0], store


def test_new_agent_key_is_pending_until_approved_then_streams(
    curve_ingest, agent_factory, tmp_path
):
    ing, server_public, store = curve_ingest
    agent = agent_factory(
        ing, ["demo:coffee"], fps=5, server_key=server_public, key_dir=str(tmp_path),
        reply_timeout_s=1.0, max_backoff_s=1.0,
    )  # fmt: skip
    assert agent.public_key and (tmp_path / "edge.public").read_text().strip() == agent.public_key
    assert stat.S_IMODE(os.stat(tmp_path / "edge.secret").st_mode) == 0o600

    pending = wait_for(lambda: store.list(), what="agent key recorded as pending")
    assert pending[0]["status"] == "pending"
    assert pending[0]["fingerprint"] == fingerprint(agent.public_key)
    assert ing.of_type("register") == [] and ing.frames == []

    store.approve(pending[0]["fingerprint"])
    wait_for(lambda: ing.of_type("register"), timeout=10, what="register once approved")
    wait_for(lambda: ing.frames_of("test-edge/demo-coffee"), timeout=10, what="encrypted frames")
    assert ing.invalid == []


def test_agent_with_wrong_server_key_gets_nothing_through(curve_ingest, agent_factory, tmp_path):
    ing, _, store = curve_ingest
    wrong_public, _ = generate_keypair()
    agent = agent_factory(
        ing, ["demo:coffee"], fps=5, server_key=wrong_public, key_dir=str(tmp_path),
        reply_timeout_s=0.5, max_backoff_s=0.5,
    )  # fmt: skip
    store.approve(generate_keypair()[0])  # an unrelated approved key
    wait_for(lambda: agent.control.reconnects >= 2, timeout=10, what="agent retried")
    assert ing.of_type("register") == [] and ing.frames == []
    assert agent.stats()["demo-coffee"]["sent"] == 0


@pytest.mark.parametrize(
    ("state_env", "run"),
    [("SENTRI_GENERAL__STATE_DIR", "in-process"), ("SENTRI_STATE_DIR", "sentri-edge")],
)
def test_show_key_prints_the_key_the_running_agent_presents(
    curve_ingest, tmp_path, monkeypatch, capsys, state_env, run
):
    """The agent and ``--show-key`` find the key pair through one rule:
    ``edge.key_dir`` or ``<general.state_dir>/keys``, whichever variable sets it.
    The agent runs in-process (EdgeAgent reads ``general`` itself) or as the CLI."""
    ing, server_public, store = curve_ingest
    state, home = tmp_path / "state", tmp_path / "home"
    for name in ("SENTRI_GENERAL__STATE_DIR", "SENTRI_STATE_DIR", "SENTRI_CONFIG",
                 "SENTRI_EDGE__KEY_DIR"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(state_env, str(state))
    monkeypatch.setenv("HOME", str(home))  # a fallback to ~/.local/state would show here
    args = [
        "--client-id", "keyed", "--frame-endpoint", ing.frame_url,
        "--control-endpoint", ing.control_url, f"--server-key={server_public}",
        "--source", "demo:coffee", "--fps", "2",
    ]  # fmt: skip
    if run == "in-process":
        agent = EdgeAgent(load_config(build_parser().parse_args(args)))
        agent.start()
        try:
            # The key ingest saw in the handshake, recorded as pending for the dashboard.
            presented = wait_for(lambda: store.list(), timeout=20, what="agent key at ingest")
        finally:
            agent.stop()
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            presented = wait_for(lambda: store.list(), timeout=20, what="agent key at ingest")
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
    assert len(presented) == 1
    key_file = state / "keys" / "edge.public"
    assert key_file.read_text().strip() == presented[0]["key"]
    assert not home.exists()

    assert main(["--show-key"]) == 0
    out = capsys.readouterr().out
    assert f"fingerprint: {presented[0]['fingerprint']}" in out
    assert f"public key:  {presented[0]['key']}" in out
    assert str(state / "keys") in out

"""CURVE: the agent encrypts and authenticates with its own key pair; ingest's
allow-list (shared.security, Redis-backed) decides, with the pending -> approved flow."""

from __future__ import annotations

import os
import stat

import pytest

from shared.security import AgentKeyStore, CurveAuthenticator, fingerprint, generate_keypair
from tests.helpers import wait_for


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

"""ingest.insecure=false: CURVE on the agent ports, keys approved in Redis."""

from __future__ import annotations

from shared import registry
from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.helpers import wait_for

from .emulators import prime


def test_curve_agent_pending_then_approved_and_bound_to_its_client_id(
    make_server, make_agent, make_worker, r, keys, tmp_path, photo
):
    jpeg, w, h = photo
    server = make_server(insecure=False, keys_dir=tmp_path)
    assert (tmp_path / "ingest.public").read_text().strip() == server.server_public
    store = AgentKeyStore(r, keys)
    apub, asec = generate_keypair()
    curve = (apub, asec, server.server_public)

    # Unknown key: recorded as pending and refused at the handshake.
    first = make_agent(server, "edge1", curve=curve)
    first.send("heartbeat", stats={})
    wait_for(lambda: store.status(apub) == "pending", what="key pending")
    assert first.no_message(0.3)
    wait_for(lambda: server.invalid_count("handshake_failed") >= 1, what="refusal counted")
    first.close()

    # Approved (e.g. in the dashboard): the agent's new connection is accepted.
    store.approve(fingerprint(apub))
    agent = make_agent(server, "edge1", curve=curve)
    agent.register()
    assert agent.heartbeat()["type"] == "ack"
    wait_for(lambda: registry.get_client(r, keys, "edge1"), what="registered")
    assert store.key_for_client("edge1") == apub
    worker = make_worker(server, ["edge1/cam1"])  # workers stay plaintext (internal)
    prime(agent, worker, "cam1", jpeg, w, h)

    # Another approved key can neither take over the client id nor send its frames.
    mpub, msec = generate_keypair()
    store.approve(mpub)
    mallory = make_agent(server, "edge1", curve=(mpub, msec, server.server_public))
    mallory.send("register", cameras=[{"name": "cam1"}])
    wait_for(lambda: server.invalid_count("client_key_mismatch") == 1, what="takeover refused")
    assert mallory.no_message(0.2)
    mallory.frame("cam1", jpeg, w, h)
    wait_for(lambda: server.invalid_count("key_mismatch", "frame") == 1, what="spoofed frame")

    # A plaintext agent cannot even connect.
    plain = make_agent(server, "edge2")
    plain.send("heartbeat", stats={})
    assert plain.no_message(0.3)

    # The approved agent is unaffected by all of this.
    seq = agent.frame("cam1", jpeg, w, h)
    wait_for(lambda: worker.poll() is not None and seq in worker.seqs("edge1/cam1"))
    assert agent.heartbeat()["type"] == "ack"
    assert len(server.sessions) == 1

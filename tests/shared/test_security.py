"""CURVE + ZAP with the Redis-backed key store, on real sockets."""

from __future__ import annotations

import zmq

from shared.security import (
    AgentKeyStore,
    CurveAuthenticator,
    client_socket_options,
    fingerprint,
    generate_keypair,
    load_or_create_keypair,
    server_socket_options,
)
from tests.helpers import wait_for


def test_keypair_files_are_private_and_stable(tmp_path) -> None:
    pub, sec = load_or_create_keypair(tmp_path, "ingest")
    assert len(pub) == 40 and len(sec) == 40
    assert (tmp_path / "ingest.secret").stat().st_mode & 0o777 == 0o600
    assert load_or_create_keypair(tmp_path, "ingest") == (pub, sec)
    assert len(fingerprint(pub).split(":")) == 8


def test_pending_then_approved_without_reconnecting_by_hand(r, keys, port_factory) -> None:
    ctx = zmq.Context()
    store = AgentKeyStore(r, keys)
    auth = CurveAuthenticator(ctx, store)
    spub, ssec = generate_keypair()
    apub, asec = generate_keypair()
    server = ctx.socket(zmq.PULL)
    server_socket_options(server, spub, ssec)
    port = port_factory()
    server.bind(f"tcp://127.0.0.1:{port}")

    def connect() -> zmq.Socket:
        # libzmq does not retry a handshake refused by ZAP: agents open a new socket.
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        client_socket_options(sock, apub, asec, spub)
        sock.connect(f"tcp://127.0.0.1:{port}")
        return sock

    client = connect()
    try:
        wait_for(lambda: store.status(apub) == "pending", 5, what="key recorded as pending")
        try:  # refused: no pipe to queue it in, or queued and never delivered
            client.send(b"before-approval", zmq.NOBLOCK)
        except zmq.Again:
            pass
        assert server.poll(500) == 0
        store.approve(fingerprint(apub), client_id="edge1")
        client.close(0)

        def through() -> bool:
            # Like the agent (edge.refused_retry_s): a new socket per attempt.
            nonlocal client
            client.close(0)
            client = connect()
            try:
                client.send(b"after-approval", zmq.NOBLOCK)
            except zmq.Again:
                pass
            return server.poll(500) > 0

        wait_for(through, 10, what="approved agent's new connection gets through")
        msg = server.recv(copy=False)
        assert msg.bytes == b"after-approval"
        assert msg.get("User-Id") == apub  # ingest learns who sent it
        assert store.bind_client("edge1", apub) and not store.bind_client("edge1", spub)
        assert store.list()[0]["client_ids"] == ["edge1"]
    finally:
        client.close(0)
        server.close(0)
        auth.stop()
        ctx.term()

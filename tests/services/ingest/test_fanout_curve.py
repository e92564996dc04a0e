"""ingest.fanout_curve: the frame fan-out (PUB) speaks CURVE to registered receivers.

Real ingest, real ZeroMQ sockets on loopback, real Redis: a receiver whose key is
registered in Redis gets frames; an unregistered key or a plaintext subscriber gets
nothing and the refusal is counted; the worker runtime and the gateway's live view
find ingest's key in Redis and subscribe with CURVE by themselves.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prometheus_client import REGISTRY

from services.gateway.live import LiveFrames
from shared.config import IngestConfig, WorkerConfig, load_section
from shared.fanout import FanoutKeys
from shared.ingest_info import publish_ingest_info, read_ingest_info
from shared.security import AgentKeyStore, SubscriberKeyStore, generate_keypair
from shared.worker import Frame, Processor, WorkerRuntime
from tests.helpers import wait_for

from .emulators import prime


@pytest.mark.parametrize(
    ("cfg", "on"),
    [
        (dict(), False),  # default: loopback
        (dict(bind_host="0.0.0.0"), True),
        (dict(bind_host="192.168.1.20"), True),
        (dict(bind_host="ingest.lan"), True),  # a name: assume the network reaches it
        (dict(bind_host="::1"), False),
        (dict(bind_host="[::1]"), False),
        (dict(bind_host="127.0.0.2"), False),
        (dict(bind_host="localhost"), False),
        (dict(bind_host="0.0.0.0", insecure=True), False),
        (dict(bind_host="0.0.0.0", fanout_curve="off"), False),
        (dict(fanout_curve="on"), True),
        (dict(fanout_curve="on", insecure=True), True),
        (dict(bind_host="0.0.0.0", fanout_curve=False), False),  # YAML's reading of `off`
        (dict(fanout_curve=True), True),  # and of `on`
    ],
)
def test_auto_is_on_for_a_network_bind_of_a_secure_ingest(cfg, on):
    assert IngestConfig(**cfg).fanout_curve_on() is on


def _curve_server(make_server, make_agent, r, keys, tmp_path, insecure: bool):
    """Ingest with a CURVE fan-out and one agent streaming (approved when ingest is secure)."""
    # A long refresh period: a receiver registered after start is let in by the direct
    # lookup, not by waiting for the next snapshot.
    server = make_server(
        insecure=insecure, fanout_curve="on", keys_dir=tmp_path,
        limits={"key_cache_refresh_s": 60},
    )  # fmt: skip
    assert server.fanout_curve and server.fanout_auth is not None
    info = read_ingest_info(r, keys)
    assert info is not None and info.fanout_key == server.server_public
    curve = None
    if not insecure:
        apub, asec = generate_keypair()
        AgentKeyStore(r, keys).approve(apub)
        curve = (apub, asec, server.server_public)
    agent = make_agent(server, "edge1", curve=curve)
    agent.register()
    return server, agent


# insecure=False: the fan-out domain shares the agents' ZAP handler;
# insecure=True: ingest starts a ZAP handler for the fan-out alone.
@pytest.mark.parametrize("insecure", [False, True], ids=["agents-curve", "agents-plain"])
def test_registered_receiver_gets_frames_others_are_refused_and_counted(
    make_server, make_agent, make_worker, r, keys, tmp_path, photo, insecure
):
    jpeg, w, h = photo
    server, agent = _curve_server(make_server, make_agent, r, keys, tmp_path, insecure)
    cam = agent.camera_id("cam1")
    store = SubscriberKeyStore(r, keys)

    # Registered after ingest read its snapshot: the direct lookup lets it in at once.
    wpub, wsec = generate_keypair()
    store.register(wpub, 30)
    good = make_worker(server, [cam], curve=(wpub, wsec, server.server_public))
    prime(agent, good, "cam1", jpeg, w, h)

    # A key nobody registered, and a plaintext subscriber: nothing, and counted.
    xpub, xsec = generate_keypair()
    stranger = make_worker(server, [cam], curve=(xpub, xsec, server.server_public))
    plain = make_worker(server, [cam])
    refused = server.fanout_auth.provider.refused

    def refusals_seen() -> bool:
        agent.frame("cam1", jpeg, w, h)
        stranger.poll(0.02)
        plain.poll(0.02)
        return refused["unknown"] >= 1 and server.invalid_count("handshake_failed", "pub") >= 1

    wait_for(refusals_seen, 10, what="stranger and plaintext subscriber refused")
    n = refused["unknown"]
    wait_for(
        lambda: (REGISTRY.get_sample_value("sentri_ingest_fanout_refused", {"reason": "unknown"})
                 or 0) >= n,
        10, what="refusals in the metric",
    )  # fmt: skip
    before = len(good.seqs(cam))
    for _ in range(20):
        agent.frame("cam1", jpeg, w, h)
        good.poll(0.02)
        stranger.poll(0.02)
        plain.poll(0.02)
    wait_for(lambda: good.poll() >= 0 and len(good.seqs(cam)) >= before + 10, what="good frames")
    assert stranger.received == [] and plain.received == []

    # An expired registration is refused like an unknown key.
    epub, esec = generate_keypair()
    store.register(epub, 0.001)
    time.sleep(0.01)
    assert not store.is_valid(epub)
    expired = make_worker(server, [cam], curve=(epub, esec, server.server_public))
    n = refused["unknown"]
    wait_for(lambda: refused["unknown"] > n, 10, what="expired key refused")
    agent.frame("cam1", jpeg, w, h)
    assert expired.poll(0.2) == 0


class _Recording(Processor):
    service = "fanouttest"
    max_batch = 4

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.lock = threading.Lock()

    def process_batch(self, frames: list[Frame]) -> None:
        with self.lock:
            self.seen.extend(f.header.seq for f in frames)


def test_worker_runtime_subscribes_with_curve_by_itself(
    make_server, make_agent, r, keys, redis_config, tmp_path, photo
):
    jpeg, w, h = photo
    server, agent = _curve_server(make_server, make_agent, r, keys, tmp_path, insecure=False)
    proc = _Recording()
    cfg = WorkerConfig(
        ingest_pub=f"tcp://127.0.0.1:{server.pub_port}", replica_id="w1", heartbeat_s=0.2
    )
    runtime = WorkerRuntime(proc, redis_config=redis_config, worker_config=cfg).start()
    try:
        assert runtime.fanout_keys.credentials is not None
        assert SubscriberKeyStore(r, keys).is_valid(runtime.fanout_keys.public)

        def processed() -> list[int]:
            agent.frame("cam1", jpeg, w, h)
            time.sleep(0.02)
            with proc.lock:
                return list(proc.seen)

        wait_for(processed, 15, what="frames processed through the CURVE fan-out")
        assert server.fanout_auth.provider.allowed >= 1
    finally:
        runtime.stop()
    assert not SubscriberKeyStore(r, keys).is_valid(runtime.fanout_keys.public)


def test_live_view_follows_ingest_into_curve(make_server, make_agent, r, keys, tmp_path, photo):
    """The live view starts before ingest said anything (plaintext: refused), then
    reconnects with CURVE once ingest's info names a fan-out key."""
    jpeg, w, h = photo
    server, agent = _curve_server(make_server, make_agent, r, keys, tmp_path, insecure=True)
    cam = agent.camera_id("cam1")
    r.delete(keys.ingest_info)  # as if this receiver started first
    fk = FanoutKeys(r, keys, name="gateway-live", refresh_s=0.2)
    live = LiveFrames(f"tcp://127.0.0.1:{server.pub_port}", fanout_keys=fk, linger_s=0.1)
    loop = asyncio.new_event_loop()
    live.start(loop)
    try:
        live.acquire(cam)
        wait_for(lambda: live.subscribed == {cam}, what="subscribed")

        def refused() -> int:
            agent.frame("cam1", jpeg, w, h)
            return server.invalid_count("handshake_failed", "pub")

        wait_for(refused, 10, what="plaintext live view refused")
        assert live.latest(cam) is None and fk.credentials is None

        publish_ingest_info(
            r, keys, bind_host="127.0.0.1", frame_port=server.frame_port,
            control_port=server.control_port, public_key=None, fanout_key=server.server_public,
        )  # fmt: skip

        def got() -> object:
            agent.frame("cam1", jpeg, w, h)
            time.sleep(0.02)
            return live.latest(cam)

        frame = wait_for(got, 15, what="live frame through the CURVE fan-out")
        assert bytes(frame.jpeg[:2]) == b"\xff\xd8"
        assert fk.credentials is not None
    finally:
        live.stop()
        loop.close()


@pytest.mark.parametrize("raw", ["on", "off", "auto"])
def test_env_and_yaml_on_off_are_modes_not_booleans(raw, tmp_path):
    """YAML reads a bare on/off as a boolean: the setting still means the mode."""
    cfg_file = tmp_path / "sentri.yaml"
    cfg_file.write_text(f"ingest:\n  fanout_curve: {raw}\n")
    from_env = load_section(IngestConfig, "ingest", env={"SENTRI_INGEST__FANOUT_CURVE": raw})
    from_file = load_section(IngestConfig, "ingest", config_file=cfg_file, env={})
    assert from_env.fanout_curve == from_file.fanout_curve == raw


def test_fail_closed_while_redis_is_down_but_known_receivers_pass(r, keys, port_factory):
    """The ZAP decision itself: a key in the snapshot passes without Redis; any other
    key is refused while Redis cannot answer, and so is the next one (backoff)."""
    from shared.redisutil import connect
    from shared.security import _SubscriberKeyCallback

    known, _ = generate_keypair()
    SubscriberKeyStore(r, keys).register(known, 30)
    dead = connect(f"redis://127.0.0.1:{port_factory()}/0", timeout=0.2, socket_timeout=0.2)
    provider = _SubscriberKeyCallback(SubscriberKeyStore(r, keys))
    provider.refresh()
    provider.store = SubscriberKeyStore(dead, keys)  # Redis goes away
    other, _ = generate_keypair()
    assert provider.callback("sentri-fanout", known.encode())
    assert not provider.callback("sentri-fanout", other.encode())
    assert not provider.callback("sentri-fanout", other.encode())
    assert provider.refused["unavailable"] == 2 and provider.refused["unknown"] == 0

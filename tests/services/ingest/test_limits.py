"""Bounds an agent cannot talk its way around, on real sockets (CURVE where keys matter).

* ``camera_info`` with new names respects the per-client camera cap and writes only
  the new camera;
* one key binds at most ``ingest.limits.clients_per_key`` client ids;
* rejecting or deleting a key frees its client id in ingest at once (no restart);
* heartbeat stats: only the known stat names are stored;
* agent clocks: the offset is estimated and an agent off by more than the bound is
  flagged in the registry and the metrics.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from shared import registry
from shared.ingest_limits import AGENT_STAT_NAMES
from shared.security import AgentKeyStore, generate_keypair
from tests.helpers import wait_for

from .emulators import prime


def test_camera_info_with_new_names_stops_at_the_camera_cap(make_server, make_agent, r, keys):
    server = make_server(limits={"cameras_per_client": 3})
    agent = make_agent(server, "edge1", cameras=("cam1",))
    agent.register()
    client = wait_for(lambda: registry.get_client(r, keys, "edge1"), what="registered")
    for i in range(2, 11):
        agent.send("camera_info", camera={"name": f"hot{i}", "quality": 50})
        assert agent.recv()["type"] == "ack"
    session = server.sessions.by_client("edge1")
    assert session is not None and len(session.cameras) == 3
    assert server.invalid_count("too_many_cameras") == 7
    server.writer.wait_idle(5)
    cams = {c["camera_id"] for c in registry.list_cameras(r, keys, "edge1")}
    assert cams == {"edge1/cam1", "edge1/hot2", "edge1/hot3"}
    after = registry.get_client(r, keys, "edge1")
    assert after["camera_count"] == 3
    # Only the new camera was written, not the client re-registered with its whole list.
    assert after["registered_at"] == client["registered_at"]
    # register itself cannot exceed the cap either: the first ones are kept, the
    # rest refused and counted (an agent told to register again would loop).
    big = make_agent(server, "edge2", cameras=("a", "b", "c", "d"))
    big.send("register", cameras=[{"name": n} for n in big.cameras])
    reply = big.recv()
    assert reply["type"] == "ack" and "1 camera(s) over the limit" in reply["reason"]
    assert set(server.sessions.by_client("edge2").cameras) == {"a", "b", "c"}
    assert server.invalid_count("too_many_cameras") == 8


def test_heartbeat_stores_only_known_stat_names(make_server, make_agent, r, keys):
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("cam1",))
    agent.register()
    flood = {f"junk_{i}": float(i) for i in range(3000)}
    stats = {"cam1": {**flood, "fps": 7.5, "sent": 12, "dropped": float("inf")}}
    assert agent.heartbeat(stats)["type"] == "ack"
    cam = wait_for(
        lambda: (c := registry.get_camera(r, keys, "edge1/cam1")) and "agent_fps" in c and c,
        what="edge stats stored",
    )
    stored = {k[len("agent_") :] for k in cam if k.startswith("agent_")}
    assert stored == {"fps", "sent"}  # junk and the non-finite value dropped
    assert stored <= AGENT_STAT_NAMES
    assert server.invalid_count("unknown_stat") == 1  # one count per message, not per name


def test_agent_clock_offset_is_estimated_and_a_skewed_agent_is_flagged(
    make_server, make_agent, make_worker, r, keys, photo
):
    jpeg, w, h = photo
    server = make_server(limits={"max_clock_offset_s": 5.0})
    fast = make_agent(server, "fast", cameras=("cam1",))
    fast.clock_offset_ns = 3600 * 10**9  # one hour ahead
    honest = make_agent(server, "honest", cameras=("cam1",))
    for agent in (fast, honest):
        agent.register()
        prime(agent, make_worker(server, [agent.camera_id("cam1")]), "cam1", jpeg, w, h)

    def flagged() -> dict | None:
        c = registry.get_client(r, keys, "fast")
        return c if c and c.get("clock_skewed") is True else None

    client = wait_for(flagged, what="the fast agent flagged")
    assert -3600 - 5 < client["clock_offset_s"] < -3600 + 5
    ok = wait_for(
        lambda: (c := registry.get_client(r, keys, "honest")) and "clock_offset_s" in c and c,
        what="the honest agent's offset",
    )
    assert abs(ok["clock_offset_s"]) < 5 and ok["clock_skewed"] is False
    skewed = REGISTRY.get_sample_value("sentri_ingest_agent_clock_skewed", {"client_id": "fast"})
    assert skewed == 1


def test_one_key_cannot_bind_more_client_ids_than_its_limit(
    make_server, make_agent, r, keys, tmp_path
):
    server = make_server(insecure=False, keys_dir=tmp_path)
    store = AgentKeyStore(r, keys)
    pub, sec = generate_keypair()
    store.approve(pub)
    curve = (pub, sec, server.server_public)
    first = make_agent(server, "lab1", curve=curve)
    first.register()
    squatter = make_agent(server, "lab2", curve=curve)
    squatter.send("register", cameras=[{"name": "cam1"}])
    wait_for(lambda: server.invalid_count("too_many_clients_per_key") == 1, what="refused")
    assert squatter.no_message(0.2)
    assert store.key_for_client("lab2") is None
    assert first.heartbeat()["type"] == "ack"


def test_statuses_read_before_an_approval_do_not_end_the_new_agents_session(
    make_server, make_agent, r, keys, tmp_path
):
    """The key refresher hands the control thread the statuses it read; the control
    thread applies them on its next tick.  If that read came before an approval and the
    agent connected in between, the older statuses must not end the agent's session
    (its next heartbeat would be answered ``reregister``)."""
    server = make_server(insecure=False, keys_dir=tmp_path)
    store = AgentKeyStore(r, keys)
    pub, sec = generate_keypair()
    store.approve(pub)
    agent = make_agent(server, "late", curve=(pub, sec, server.server_public))
    agent.register()
    server.control.keys_refreshed({})  # read before the approval: the key is unknown
    wait_for(lambda: server.control._keys_refreshed is False, what="statuses applied")
    assert agent.heartbeat()["type"] == "ack"
    assert store.key_for_client("late") == pub


def test_rejected_key_frees_its_client_id_without_restarting_ingest(
    make_server, make_agent, make_worker, r, keys, tmp_path, photo
):
    """The documented recovery: reject the old key, start the agent with a new key."""
    jpeg, w, h = photo
    server = make_server(insecure=False, keys_dir=tmp_path)
    store = AgentKeyStore(r, keys)
    spub = server.server_public
    old, new, newest = generate_keypair(), generate_keypair(), generate_keypair()
    store.approve(old[0])
    agent = make_agent(server, "garage", curve=(*old, spub))
    agent.register()
    worker = make_worker(server, ["garage/cam1"])
    prime(agent, worker, ["garage", "cam1"][1], jpeg, w, h)

    store.reject(old[0])  # what the dashboard's reject does
    store.approve(new[0])
    wait_for(lambda: server.sessions.by_client("garage") is None, what="old session ended")
    replacement = make_agent(server, "garage", curve=(*new, spub))
    wait_for(lambda: _registers(replacement), what="new key registers the freed client id")
    assert store.key_for_client("garage") == new[0]
    # The rejected key's open connection can neither send frames nor take the id back.
    before = len(worker.seqs("garage/cam1"))
    agent.frame("cam1", jpeg, w, h)
    wait_for(lambda: server.invalid_count("key_mismatch", "frame") >= 1, what="old frames refused")
    agent.send("register", cameras=[{"name": "cam1"}])
    wait_for(lambda: server.invalid_count("key_not_approved") >= 1, what="old key refused")
    seq = replacement.frame("cam1", jpeg, w, h)
    wait_for(lambda: worker.poll() is not None and seq in worker.seqs("garage/cam1"))
    assert len(worker.seqs("garage/cam1")) == before + 1

    # Deleting a key (admin DELETE) frees the id the same way.
    assert store.delete(new[0]) is not None
    store.approve(newest[0])
    wait_for(lambda: server.sessions.by_client("garage") is None, what="deleted key's session")
    third = make_agent(server, "garage", curve=(*newest, spub))
    wait_for(lambda: _registers(third), what="register after delete")
    assert store.key_for_client("garage") == newest[0]


def _registers(agent) -> bool:
    agent.send("register", cameras=[{"name": "cam1"}])
    return not agent.no_message(0.5) and agent.recv()["type"] == "ack"

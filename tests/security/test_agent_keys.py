"""The agent key check (ZAP) and the key store's bounds, against a real Redis.

* Fail closed: when Redis errors, a key the cache does not know as approved is
  refused; approved keys already known keep working.
* Pending keys are capped per source and in total, throttled, expire when never
  decided, and are announced to dashboards in coalesced notices.
* An administrator can delete a key; a rejected or deleted key frees its client ids.
* One key binds at most ``clients_per_key`` client ids.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.redisutil import connect
from shared.security import (
    AgentKeyStore,
    ClientLimitReached,
    _KeyCallback,
    generate_keypair,
)


def _key() -> str:
    return generate_keypair()[0]


def test_key_check_fails_closed_when_redis_errors(r, keys, port_factory) -> None:
    store = AgentKeyStore(r, keys)
    approved, pending, unknown = _key(), _key(), _key()
    store.approve(approved)
    store.note_pending(pending)
    zap = _KeyCallback(store)
    zap.refresh()  # the snapshot a running ingest keeps
    assert zap.callback("sentri", approved.encode()) is True
    assert zap.callback("sentri", unknown.encode()) is False

    # Redis goes away (nothing listens on this port: every call raises).
    store.r = connect(f"redis://127.0.0.1:{port_factory()}/0", timeout=0.2)
    assert zap.callback("sentri", unknown.encode()) is False, "unknown key let in (fail-open)"
    assert zap.callback("sentri", pending.encode()) is False
    assert zap.callback("sentri", approved.encode()) is True  # known agents keep working
    assert zap.unavailable >= 2
    fresh = _KeyCallback(store)  # an ingest that started while Redis was down
    assert fresh.callback("sentri", approved.encode()) is False


def test_pending_keys_capped_per_source_and_in_total_and_notices_coalesced(r, keys) -> None:
    store = AgentKeyStore(r, keys)
    sub = r.pubsub()
    sub.subscribe(keys.notify)
    sub.get_message(timeout=1)  # subscribe confirmation
    zap = _KeyCallback(store, pending_max=8, pending_per_source=3, pending_per_minute=1000)
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        zap.source = source
        for _ in range(20):  # a flood of fresh keys from each source
            assert zap.callback("sentri", _key().encode()) is False
    new = zap.flush_pending()
    records = store.records()
    assert len(records) == len(new) == 8  # 3 + 3 + 2: the total cap
    per_source: dict[str, int] = {}
    for rec in records.values():
        per_source[rec["source"]] = per_source.get(rec["source"], 0) + 1
    assert max(per_source.values()) <= 3
    assert zap.refused_pending["per_source"] > 0 and zap.refused_pending["total"] > 0
    assert r.zcard(keys.agent_keys_pending) == 8
    # Ingest announces a batch with one notice, not one per key.
    store.announce_pending(new)
    notices = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.2)
        if msg and msg["type"] == "message":
            notices.append(json.loads(msg["data"]))
    sub.close()
    assert [n["count"] for n in notices if n["type"] == "agent_key_pending"] == [8]
    # Even with the caps lifted, a store-level cap holds.
    assert store.note_pending(_key(), max_pending=8, announce=False) is None


def test_a_pending_key_seen_again_gets_a_fresh_last_seen(r, keys) -> None:
    store = AgentKeyStore(r, keys)
    zap = _KeyCallback(store)
    key = _key()
    zap.callback("sentri", key.encode())
    zap.flush_pending()
    first = store.get(key)
    time.sleep(0.01)  # wall clock must move for last_seen to differ
    zap.callback("sentri", key.encode())
    zap.flush_pending()
    again = store.get(key)
    assert again["first_seen"] == first["first_seen"] < again["last_seen"]


def test_pending_keys_are_throttled_per_source(r, keys) -> None:
    zap = _KeyCallback(AgentKeyStore(r, keys), pending_per_source=50, pending_per_minute=5)
    zap.source = "10.0.0.9"
    for _ in range(30):
        zap.callback("sentri", _key().encode())
    assert len(zap.flush_pending()) <= 5
    assert zap.refused_pending["rate"] >= 25


def test_undecided_pending_keys_expire_and_decided_ones_stay(r, keys) -> None:
    store = AgentKeyStore(r, keys)
    old, young, decided = _key(), _key(), _key()
    store.note_pending(old, announce=False)
    store.note_pending(decided, announce=False)
    store.approve(decided)
    later = time.time() + 3600
    store.note_pending(young, announce=False)
    gone = store.expire_pending(ttl_s=1800, now=later)
    # ``young`` was recorded "now", i.e. an hour before ``later``: also expired.
    assert set(gone) == {old, young}
    assert store.status(decided) == "approved"
    assert r.zcard(keys.agent_keys_pending) == 0
    store.note_pending(young, announce=False)
    assert store.expire_pending(ttl_s=1800) == []  # fresh: kept


def test_delete_forgets_a_key_and_frees_its_client_ids(r, keys) -> None:
    store = AgentKeyStore(r, keys)
    key = _key()
    store.approve(key)
    assert store.bind_client("garage", key)
    assert store.delete(key)["key"] == key
    assert store.get(key) is None and store.key_for_client("garage") is None
    other = _key()
    store.approve(other)
    assert store.bind_client("garage", other)  # the freed client id
    assert store.delete(_key()) is None  # unknown: nothing to delete


def test_one_key_binds_at_most_clients_per_key_client_ids(r, keys) -> None:
    store = AgentKeyStore(r, keys)  # default: 1
    key = _key()
    store.approve(key)
    assert store.bind_client("a", key)
    assert store.bind_client("a", key)  # idempotent
    with pytest.raises(ClientLimitReached):
        store.bind_client("b", key)
    assert store.key_for_client("b") is None
    roomy = AgentKeyStore(r, keys, clients_per_key=2)
    assert roomy.bind_client("b", key)
    with pytest.raises(ClientLimitReached):
        roomy.bind_client("c", key)
    store.reject(key)  # a rejected key frees them all
    assert store.key_for_client("a") is None and store.key_for_client("b") is None
    again = _key()
    store.approve(again)
    assert store.bind_client("a", again)


def test_a_snapshot_read_before_an_approval_does_not_undo_it(r, keys) -> None:
    """The key refresher read the statuses, the operator approved a key, the agent's
    handshake looked it up (approved) and only then was the older snapshot stored.
    The older snapshot must not undo the approval: ingest would refuse the agent's
    register and end its session on the next refresh (a CI flake: ``reregister``)."""
    store = AgentKeyStore(r, keys)
    agent = _key()
    store.note_pending(agent)
    zap = _KeyCallback(store)
    zap.refresh()
    read = store.records

    def records_then_approval() -> dict:
        snapshot = read()  # still "pending" here
        store.approve(agent)
        assert zap.callback("sentri", agent.encode()) is True  # the handshake
        return snapshot

    store.records = records_then_approval  # type: ignore[method-assign]
    zap.refresh()
    assert zap.approved(agent), "an older snapshot undid the approval"
    assert zap.known()[agent] == "approved"  # what ingest's session revocation reads
    store.records = read  # type: ignore[method-assign]
    store.reject(agent)
    zap.refresh()  # a snapshot newer than the lookup decides again
    assert not zap.approved(agent)

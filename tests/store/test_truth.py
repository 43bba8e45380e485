"""The shared state tells the truth: nothing lost, resurrected or rolled back.

Store-level proofs, each checking the whole state: every process and the store
hold exactly the expected features, never only the one a test changed. They
run once on the in-memory backend, whose clock (``store_clock``) the absence
tests step past a grace instead of sleeping; the store threads still tick on
real time. The few marked ``backends(*EVERY_BACKEND)`` are the smoke runs on
memcached, the embedded file and Redis: an emptied store, a foreign or stale
value forced under the key, the Ruby store's forms.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from fh_prefork import features as fs
from fh_prefork import tombstones as ts
from fh_prefork.store import SessionStore
from fh_prefork.store.memcache import MemcacheBackend
from fh_prefork.store.redis import RedisBackend
from fh_prefork.testing.clock import ManualClock
from fh_prefork.testing.memory import MemoryBackend
from tests.conftest import make_config
from tests.support.fixtures import EVERY_BACKEND
from tests.support.procs import wait_for
from tests.support.stores import feat, peek, repo_of

StoreFactory = Callable[..., SessionStore]

pytestmark = pytest.mark.backends("memory")
#: a smoke test: on every backend, the real ones too
on_every_backend = pytest.mark.backends(*EVERY_BACKEND)


def held(config: Any) -> dict[str, int]:
    return {f["key"]: f["version"] for f in repo_of(config).feature_states()}


def stored(store: SessionStore) -> dict[str, int] | None:
    snapshot = peek(store).read()
    if snapshot.value is None:
        return None
    return {f["key"]: f["version"] for f in fs.decode(snapshot.value, 10**8).placed.values()}


def stored_tombstones(store: SessionStore) -> set[str]:
    return set(ts.decode(peek(store).read().tombstones, 10**8)[0])


def stored_tombstone_objects(store: SessionStore) -> list[ts.Tombstone]:
    return list(ts.decode(peek(store).read().tombstones, 10**8)[0].values())


def empty_the_store(store: SessionStore) -> None:
    """What a flush_all, a restart, an eviction or a deleted file leaves: nothing at all."""
    backend = peek(store)
    if isinstance(backend, MemcacheBackend):
        backend._client.delete_many([backend.data_key, backend.sha_key, backend.tombstones_key])
    elif isinstance(backend, RedisBackend):
        for key in (backend.data_key, backend.sha_key, backend.tombstones_key):
            backend._client.delete(key)
    elif isinstance(backend, MemoryBackend):
        for key in (backend.data_key, backend.sha_key, backend.tombstones_key):
            _, version = backend.medium.get(key)
            if version is not None:
                assert backend.medium.delete_if(key, version)
    else:
        for path in (backend.path, backend.tombstones_path):
            path.unlink(missing_ok=True)


def force(store: SessionStore, raw: bytes, sha: bytes | None = None) -> None:
    """Put raw bytes under the data key, as a foreign writer or a stale node would."""
    backend = peek(store)
    if isinstance(backend, (MemcacheBackend, RedisBackend)):
        backend._client.set(backend.data_key, raw)
        if sha is not None:
            backend._client.set(backend.sha_key, sha)
    elif isinstance(backend, MemoryBackend):
        for key, value in ((backend.data_key, raw), (backend.sha_key, sha)):
            if value is not None:
                _, version = backend.medium.get(key)
                assert (backend.medium.add(key, value) if version is None
                        else backend.medium.cas(key, value, version))
    else:
        backend._replace(backend.path, raw, 0)


def raw_under(store: SessionStore, which: str) -> bytes | None:
    """The bytes under the store's data or fingerprint key, on a keyed medium."""
    backend = peek(store)
    key = backend.data_key if which == "data" else backend.sha_key
    if isinstance(backend, MemoryBackend):
        return backend.medium.get(key)[0]
    value: bytes | None = backend._client.get(key)
    return value


FIVE = {f"F{i}": 1 for i in range(5)}
#: added to a step over a bound: a clock stepped exactly onto one may read a hair short of it
#: (the difference of two unix times in floating point)
HAIR = 0.01


def five() -> list[dict[str, Any]]:
    return [feat(k, v) for k, v in FIVE.items()]


def a_and_b_holding(make_store: StoreFactory, versions: dict[str, int], **opts: Any
                    ) -> tuple[Any, SessionStore, Any]:
    """Processes A and B on one store (``opts`` for both): A's Edge sends ``versions``, A
    writes them and B holds them. Gives A's config, A's store and B's config."""
    a_cfg, b_cfg = make_config(), make_config()
    a = make_store(a_cfg, **opts)
    make_store(b_cfg, **opts)
    repo_of(a_cfg).notify("features", [feat(k, v) for k, v in versions.items()])
    assert a.flush(2.0)
    wait_for(lambda: held(b_cfg) == versions, 3, what="B to follow")
    return a_cfg, a, b_cfg


@on_every_backend
def test_empty_store_and_one_update_loses_nothing(make_store: StoreFactory) -> None:
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.1)
    empty_the_store(a)
    repo_of(a_cfg).notify("feature", feat("F0", 2))
    assert a.flush(2.0)
    expected = {**FIVE, "F0": 2}
    assert stored(a) == expected, "one write into an empty store carries everything"
    wait_for(lambda: held(b_cfg) == expected, 3, what="B to hold everything")
    assert held(a_cfg) == expected


def test_a_delete_pending_while_the_store_was_empty_deletes_only_itself(
        make_store: StoreFactory) -> None:
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.1)
    empty_the_store(a)
    repo_of(a_cfg).notify("delete_feature", {"id": "id-F1", "key": "F1", "version": 1})
    assert a.flush(2.0)
    expected = {k: v for k, v in FIVE.items() if k != "F1"}
    assert stored(a) == expected
    assert stored_tombstones(a) == {"id-F1"}
    wait_for(lambda: held(b_cfg) == expected, 3, what="B to drop only F1")


def test_a_process_that_held_the_store_keeps_it_whole_after_an_empty_read(
        make_store: StoreFactory) -> None:
    cfg = make_config()
    store = make_store(cfg, refresh_timeout=0.05)
    repo_of(cfg).notify("features", five())
    assert store.flush(2.0)
    empty_the_store(store)
    wait_for(lambda: stored(store) == FIVE, 3, what="the store refilled from memory")
    assert held(cfg) == FIVE
    assert store.counters.seeds >= 1


@on_every_backend
def test_deleted_features_do_not_come_back(make_store: StoreFactory) -> None:
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.05)
    repo_of(a_cfg).notify("delete_feature", {"id": "id-F2", "key": "F2", "version": 1})
    assert a.flush(2.0)
    expected = {k: v for k, v in FIVE.items() if k != "F2"}
    wait_for(lambda: held(b_cfg) == expected, 3, what="B to drop F2")
    # a lagging stream re-sends the deleted version to B
    repo_of(b_cfg).notify("feature", feat("F2", 1))
    # the data key is evicted, then an unrelated update is written
    empty_the_store(a)
    force(a, fs.encode(five()))     # worse: a stale copy holding F2 comes back
    repo_of(a_cfg).notify("feature", feat("F3", 2))
    expected["F3"] = 2
    wait_for(lambda: stored(a) == expected and held(a_cfg) == expected
             and held(b_cfg) == expected, 4, what="no resurrection anywhere")
    c_cfg = make_config()
    make_store(c_cfg)
    assert held(c_cfg) == expected, "a new process starts without the deleted feature"
    # a re-created feature (a new id, as FeatureHub gives it) lives
    repo_of(a_cfg).notify("feature", feat("F2", 1, fid="id-F2-again"))
    expected["F2"] = 1
    wait_for(lambda: stored(a) == expected and held(b_cfg) == expected, 4,
             what="the re-created feature everywhere")


@on_every_backend
def test_a_stale_value_is_healed_and_never_served(make_store: StoreFactory) -> None:
    newer = {**FIVE, "F0": 3, "NEW": 1}
    a_cfg, a, b_cfg = a_and_b_holding(make_store, newer, refresh_timeout=0.05, verify_every=2)
    versions_seen: list[int] = []
    force(a, fs.encode(five()))  # a memcached node comes back with its old value
    for _ in range(200):
        versions_seen.append(held(b_cfg).get("F0", 0))
        if stored(a) == newer:
            break
        time.sleep(0.02)
    assert stored(a) == newer, "healed within a verify period"
    assert min(versions_seen) == 3, "no process ever served the older version"
    assert held(a_cfg) == held(b_cfg) == newer


@on_every_backend
def test_ruby_forms_are_read_and_an_array_order_fingerprint_is_left_alone(
        make_store: StoreFactory) -> None:
    cfg = make_config()
    store = make_store(cfg, refresh_timeout=0.05)
    ruby_array = [feat(f"R{i:03}", 1, "x" * 40) for i in range(60, 0, -1)]  # unsorted
    raw = json.dumps(json.dumps(ruby_array)).encode()
    compressed = zlib.compress(raw)
    assert len(raw) >= 4096
    backend = peek(store)
    sha = fs.fingerprint_in_order((f["id"], f["version"]) for f in ruby_array)
    force(store, compressed, json.dumps(sha).encode())
    assert store.refresh(2.0) and store.refresh(2.0)
    assert len(held(cfg)) == 60
    assert store.counters.junk == 0 and store.counters.writes == 0
    if isinstance(backend, (MemcacheBackend, RedisBackend, MemoryBackend)):
        assert raw_under(store, "sha") == json.dumps(sha).encode(), \
            "a consistent Ruby fingerprint is never rewritten"
        assert raw_under(store, "data") == compressed


def test_one_bad_stored_entry_costs_only_itself(make_store: StoreFactory) -> None:
    writer_cfg = make_config()
    writer = make_store(writer_cfg)
    bad = {**feat("BAD", 1), "strategies": 5}
    odd = {**feat("ODD", 1), "strategies": [{"id": "s", "value": False, "attributes": [
        {"conditional": "NO_SUCH_CONDITIONAL", "fieldName": "country", "type": "STRING",
         "values": ["nz"]}]}]}
    force(writer, json.dumps([*five(), bad, odd]).encode())
    cfg = make_config()
    store = make_store(cfg)          # must not raise
    assert held(cfg) == FIVE
    repo_of(cfg).notify("feature", feat("F0", 2))
    assert store.flush(2.0)
    after = stored(store)
    assert after is not None and after["F0"] == 2
    assert after["BAD"] == 1 and after["ODD"] == 1, "foreign entries are kept, not deleted"


def test_a_store_feature_a_connected_edge_stream_never_lists_is_deleted_after_the_grace(
        make_store: StoreFactory, store_clock: ManualClock) -> None:
    """A delete that reached no stream: the followers that held the feature write it back,
    and the leader, which never held it, hears no delete for it. Only the leader's Edge
    stream, which does not list it, says it is gone."""
    leader_cfg, follower_cfg = make_config(), make_config()
    follower = make_store(follower_cfg, refresh_timeout=0.05)
    repo_of(follower_cfg).notify("features", five(), source="replayed-earlier")
    assert follower.flush(2.0)
    leader = make_store(leader_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    connected = [True]
    leader.edge_live = lambda: connected[0]
    assert held(leader_cfg) == FIVE          # replayed from the store before Edge answered
    repo_of(leader_cfg).notify("features", [feat(k, v) for k, v in FIVE.items() if k != "F4"])
    assert leader.refresh(2.0) and follower.refresh(2.0)
    assert held(leader_cfg) == held(follower_cfg) == stored(leader) == FIVE, "within the grace"
    store_clock.advance(0.5 + HAIR)                    # the grace: F4 is proposed as deleted
    assert leader.refresh(2.0)
    store_clock.advance(leader.confirm_seconds() + HAIR)   # the proposal stood: confirmed
    expected = {k: v for k, v in FIVE.items() if k != "F4"}
    wait_for(lambda: stored(leader) == expected and held(follower_cfg) == expected
             and held(leader_cfg) == expected, 5, what="F4 gone from the store and the follower")
    assert "id-F4" in stored_tombstones(leader)


def test_a_feature_pushed_to_one_stream_only_is_deleted_by_no_other_stream(
        make_store: StoreFactory, store_clock: ManualClock) -> None:
    """SSE: Edge's create reaches A's stream, and B's stream lags or missed it. B's stream is
    up and silent about NEW, but its full list came before NEW existed: that silence is no
    evidence, so NEW lives on everywhere (in every process and the store), past the grace.
    Only a full list that arrives after NEW was stored, and lacks it, judges it."""
    a_cfg, b_cfg = make_config(), make_config()
    a = make_store(a_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    b = make_store(b_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    a.edge_live = b.edge_live = lambda: True        # both streams connected
    repo_of(a_cfg).notify("features", five())
    repo_of(b_cfg).notify("features", five())
    assert a.flush(2.0) and b.flush(2.0)
    repo_of(a_cfg).notify("feature", feat("NEW", 1))  # pushed down A's stream only
    assert a.flush(2.0)
    expected = {**FIVE, "NEW": 1}
    wait_for(lambda: held(b_cfg) == expected, 3, what="NEW reaches B through the store")
    store_clock.advance(0.6)   # past the grace: the old judge deleted NEW fleet-wide by now
    assert a.refresh(2.0) and b.refresh(2.0) and a.refresh(2.0) and b.refresh(2.0)
    store_clock.advance(a.confirm_seconds() + HAIR)   # and past a proposal's confirmation
    assert a.refresh(2.0) and b.refresh(2.0) and a.refresh(2.0) and b.refresh(2.0)
    assert held(a_cfg) == held(b_cfg) == stored(a) == expected
    assert "id-NEW" not in stored_tombstones(a)
    repo_of(b_cfg).notify("feature", feat("NEW", 1))  # B's stream catches up: nothing changes
    assert b.refresh(2.0)
    assert held(a_cfg) == held(b_cfg) == stored(a) == expected

    # NEW deleted on Edge while no stream heard it: both streams reconnect, their lists lack it
    repo_of(a_cfg).notify("features", five())
    repo_of(b_cfg).notify("features", five())
    store_clock.advance(0.6)                          # the grace: proposed
    assert a.refresh(2.0) and b.refresh(2.0)
    store_clock.advance(a.confirm_seconds() + HAIR)   # confirmed
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == FIVE, 5,
             what="NEW deleted everywhere once lists made after it was stored lack it")
    assert "id-NEW" in stored_tombstones(a)


def test_a_stored_feature_newer_than_a_tombstone_held_here_is_judged_without_error(
        make_store: StoreFactory) -> None:
    """The judge meets a stored feature whose id this process buried at an older version
    (a delete, then the same id stored again at a newer one): a thread error looped there."""
    a_cfg, b_cfg = make_config(), make_config()
    a = make_store(a_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    a.edge_live = lambda: True
    repo_of(a_cfg).notify("features", [feat(k, v) for k, v in FIVE.items() if k != "F4"])
    assert a.flush(2.0)
    repo_of(a_cfg).bury("id-F4", "F4", 1, source="edge")     # deleted here at version 1
    b = make_store(b_cfg, refresh_timeout=0.05)
    repo_of(b_cfg).notify("feature", feat("F4", 2), source="a-peer")  # stored again, newer
    assert b.flush(2.0)
    for _ in range(5):
        assert a.refresh(2.0)
    assert a.counters.errors == 0, "the store thread raised"
    assert held(a_cfg)["F4"] == 2, "first known after A's list: not A's to judge"


def test_a_poll_behind_a_peers_deletes_nothing_the_peer_saw_created(
        make_store: StoreFactory, store_clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    """Poll mode: B's poll lists a new feature that A's polls (from a lagging Edge replica)
    keep lacking past the grace. A proposes it as deleted; B's current view names it and
    lifts the proposal before it is confirmed, so NEW is never removed anywhere. Only when
    every view lacks it (a real delete no stream heard) does the proposal stand."""
    a_cfg, b_cfg = make_config(), make_config()
    a = make_store(a_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    b = make_store(b_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    a.edge_live = b.edge_live = lambda: True     # both polls answered within their interval
    older = [feat(k, v) for k, v in FIVE.items()]
    repo_of(a_cfg).notify("features", older)              # A's poll
    repo_of(b_cfg).notify("features", older + [feat("NEW", 1)])  # B's poll, a moment later
    assert b.flush(2.0)
    expected = {**FIVE, "NEW": 1}
    wait_for(lambda: held(a_cfg) == expected, 3, what="NEW reaches A through the store")
    ever_missing = []
    with caplog.at_level(logging.DEBUG, logger="fh_prefork"):
        for _ in range(40):                # four graces of A's replica lacking NEW
            repo_of(a_cfg).notify("features", older)      # A's replica keeps lagging
            assert a.refresh(2.0) and b.refresh(2.0)
            for state in (held(a_cfg), held(b_cfg), stored(a)):
                if state != expected:
                    ever_missing.append(state)
            store_clock.advance(0.05)
    assert not ever_missing, f"NEW was removed while B's Edge listed it: {ever_missing[:3]}"
    assert not any(t.covers(feat("NEW", 1)) for t in stored_tombstone_objects(a))
    assert "'NEW' (id id-NEW, version 1) has been missing" in caplog.text, \
        "A never proposed NEW: the lift was not put to the test"

    # a real delete no stream heard: every poll lacks it from now on
    for _ in range(3):
        repo_of(a_cfg).notify("features", older)
        repo_of(b_cfg).notify("features", older)
        store_clock.advance(0.6)
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == FIVE, 5,
             what="NEW removed everywhere once every poll kept lacking it past the grace")
    assert "id-NEW" in stored_tombstones(a)
    # and Edge naming it again (the lists were bad after all) brings it back everywhere
    repo_of(b_cfg).notify("features", older + [feat("NEW", 1)])
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == expected, 5,
             what="NEW back everywhere once one Edge view names it again")


def test_absence_from_edge_is_not_judged_while_the_stream_is_down_or_within_the_grace(
        make_store: StoreFactory, store_clock: ManualClock) -> None:
    leader_cfg, other_cfg = make_config(), make_config()
    leader = make_store(leader_cfg, refresh_timeout=0.05, edge_absence_seconds=0.5)
    connected = [False]
    leader.edge_live = lambda: connected[0]
    repo_of(leader_cfg).notify("features", five())
    other = make_store(other_cfg, refresh_timeout=0.05)
    repo_of(other_cfg).notify("feature", feat("NEW", 1), source="a-peer-whose-stream-is-ahead")
    assert other.flush(2.0)
    expected = {**FIVE, "NEW": 1}
    wait_for(lambda: held(leader_cfg) == expected, 3, what="NEW reaches the leader")
    for _ in range(10):                       # Edge down: nothing is judged, however long
        assert leader.refresh(2.0)
        store_clock.advance(0.1)
    assert stored(leader) == expected
    connected[0] = True
    assert leader.refresh(2.0)
    repo_of(leader_cfg).notify("feature", feat("NEW", 1))  # our stream catches up in time
    store_clock.advance(0.6)   # past the 0.5 s grace: what is judged depends on time itself
    assert leader.refresh(2.0) and leader.refresh(2.0)
    store_clock.advance(leader.confirm_seconds() + HAIR)  # and past a confirmation
    assert leader.refresh(2.0) and leader.refresh(2.0)
    assert stored(leader) == expected
    # the other store may have started before the leader's first write, and holds the
    # five once its own thread (on real time) has read the store since
    wait_for(lambda: held(other_cfg) == expected, 5, what="the other store holds the whole state")


# -- the real Edge's truths (issue 19): deletes delete, absences never refuse Edge ---------


def test_a_real_edge_delete_at_version_0_leaves_every_process_and_the_store_for_good(
        make_store: StoreFactory) -> None:
    """The real Edge deletes with version 0 and no value (edge-common
    FeatureTransformerUtils.java). It reaches one stream; the store, the peer, and a newer
    copy the store got first must all lose it, and no stale copy brings it back."""
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.05)
    repo_of(b_cfg).notify("feature", feat("F2", 3), source="a-peer-ahead")  # newer elsewhere
    wait_for(lambda: (stored(a) or {}).get("F2") == 3, 3, what="F2 v3 stored")
    repo_of(a_cfg).notify("delete_feature", {"id": "id-F2", "key": "F2", "version": 0,
                                             "type": "BOOLEAN", "l": False})
    expected = {k: v for k, v in FIVE.items() if k != "F2"}
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == expected, 5,
             what="F2 gone from every process and the store")
    for version in (1, 3, 9):                          # stale copies of every kind
        repo_of(b_cfg).notify("feature", feat("F2", version), source="a-lagging-peer")
        repo_of(a_cfg).notify("feature", feat("F2", version))   # a lagging stream
    assert a.refresh(2.0)
    assert held(a_cfg) == held(b_cfg) == stored(a) == expected


def test_an_empty_edge_list_removes_nothing_anywhere(make_store: StoreFactory,
                                                    store_clock: ManualClock) -> None:
    """An Edge restarting with an empty cache serves an empty list, for longer than the
    grace: no flag leaves any process or the store."""
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.05,
                                      edge_absence_seconds=0.2)
    a.edge_live = lambda: True
    for _ in range(8):                 # 0.8 s: four graces, but less than a suspect list's six
        repo_of(a_cfg).notify("features", [])
        assert a.refresh(2.0)
        store_clock.advance(0.1)
    assert a.refresh(2.0) and a.refresh(2.0)
    assert held(a_cfg) == held(b_cfg) == stored(a) == FIVE
    assert not stored_tombstones(a)


def test_a_feature_removed_by_absence_comes_back_at_the_same_version_everywhere(
        make_store: StoreFactory, store_clock: ManualClock) -> None:
    """Edge lacked F3 past the grace (it was a bad list, not a delete): removed everywhere.
    Edge names it again at the very same id and version: back in every process and the
    store within a refresh, and the store keeps no mark that could refuse it."""
    a_cfg, a, b_cfg = a_and_b_holding(make_store, FIVE, refresh_timeout=0.05,
                                      edge_absence_seconds=0.3)
    a.edge_live = lambda: True
    without = {k: v for k, v in FIVE.items() if k != "F3"}
    for _ in range(10):     # 1 s: past the grace (0.3 s), then the proposal's confirmation
        repo_of(a_cfg).notify("features", [feat(k, v) for k, v in without.items()])
        assert a.refresh(2.0)
        store_clock.advance(0.1)
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == without, 5,
             what="F3 removed everywhere after the grace and the confirmation")
    repo_of(a_cfg).notify("features", five())
    wait_for(lambda: held(a_cfg) == held(b_cfg) == stored(a) == FIVE, 3,
             what="F3 back everywhere at the same version")
    assert "id-F3" not in stored_tombstones(a)

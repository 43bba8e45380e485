"""The in-memory backend under the real store core: two "processes" share a state, an outage
is survived, and a lease lapses on a clock the test steps (no sleeping, no server)."""

from __future__ import annotations

from fh_prefork.store.lease import Lease
from fh_prefork.testing.clock import ManualClock
from fh_prefork.testing.memory import MemoryBackend, MemoryMedium, memory_store
from tests.support.fixtures import make_config
from tests.support.procs import wait_for
from tests.support.stores import feat, repo_of


def served(config: object) -> dict[str, int]:
    return {f["key"]: f["version"] for f in repo_of(config).feature_states()}


def test_two_stores_on_one_medium_share_what_either_hears() -> None:
    medium = MemoryMedium()
    a_cfg, b_cfg = make_config(), make_config()
    a = memory_store(medium, a_cfg, {"refresh_timeout": 0.05})
    b = memory_store(medium, b_cfg, {"refresh_timeout": 0.05})
    try:
        repo_of(a_cfg).notify("features", [feat("A", 1), feat("B", 1)])
        assert a.flush(5)
        wait_for(lambda: served(b_cfg) == {"A": 1, "B": 1}, 5, what="b to read a's write")
        repo_of(b_cfg).notify("feature", feat("A", 2))
        assert b.flush(5)
        wait_for(lambda: served(a_cfg) == {"A": 2, "B": 1}, 5, what="a to read b's write")
    finally:
        a.close()
        b.close()
    assert medium.keys() == ["featurehub_env-test", "featurehub_env-test_sha"]


def test_an_outage_keeps_the_update_until_the_medium_is_back() -> None:
    medium = MemoryMedium()
    config = make_config()
    store = memory_store(medium, config, {"refresh_timeout": 0.05})
    try:
        medium.down = True
        repo_of(config).notify("features", [feat("A", 1)])
        assert not store.flush(0.3)
        wait_for(lambda: not store.status()["healthy"], 5, what="the store to say it is down")
        medium.down = False
        assert store.flush(5)
    finally:
        store.close()
    reader = MemoryBackend(medium, "featurehub_env-test")
    assert reader.read().value is not None and reader.change_token() is not None


def test_a_lease_lapses_on_the_medium_clock() -> None:
    now = [1000.0]
    medium = MemoryMedium(clock=lambda: now[0])
    a, b = MemoryBackend(medium, "p_env"), MemoryBackend(medium, "p_env")
    first = Lease("h:1:x", "h", 1, 0.0)
    assert a.lease_acquire(first, 10).held
    now[0] += 9.9
    assert not b.lease_acquire(Lease("h:2:y", "h", 2, 0.0), 10).held
    now[0] += 0.2
    assert b.lease_acquire(Lease("h:2:y", "h", 2, 0.0), 10).held
    assert not a.lease_renew(first, 10).held


def test_a_manual_clock_on_the_medium_is_what_its_stores_judge_absence_by() -> None:
    """One advance steps a store's absence grace (300 s by default) and its proposal's
    confirmation: a feature Edge's list lacks is removed without waiting on real time."""
    clock = ManualClock()
    config = make_config()
    store = memory_store(MemoryMedium(clock=clock), config, {"refresh_timeout": 0.05})
    try:
        store.edge_live = lambda: True
        repo_of(config).notify("features", [feat("A", 1), feat("B", 1)])
        repo_of(config).notify("features", [feat("A", 1)])   # B deleted, no stream heard it
        assert store.refresh(5) and served(config) == {"A": 1, "B": 1}
        clock.advance(store.options.edge_absence_seconds + 1)   # proposed
        assert store.refresh(5)
        clock.advance(store.confirm_seconds() + 1)              # confirmed
        wait_for(lambda: served(config) == {"A": 1}, 5, what="B removed on the stepped clock")
    finally:
        store.close()

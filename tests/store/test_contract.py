"""One contract for every store backend: what the store core relies on, stated once.

:class:`BackendContract` holds the tests; each backend plugs in by subclassing it
and providing two things only: ``backends`` (a factory of independent backends,
each with its own connection or file descriptors, on one fresh store) and
``abandon`` (what a lease holder that stops without releasing looks like on that
medium: on memcached and Redis it simply stops renewing; the file lease is a lock
that dies with its holder, so the holder closes). No test branches on the backend.

The contract (``fh_prefork/store/backend.py``):

* ``read()`` gives the data and tombstone bytes (None when absent) and a change
  token; ``change_token()`` is the same token, cheaply, and changes when the data does;
* ``write()`` creates what ``previous`` found absent, and refuses when another
  writer created it first (create-if-absent);
* ``write()`` is a compare-and-set: refused (None) when the data, or the
  tombstones it writes, changed since ``previous``; of writers racing from one
  snapshot exactly one wins;
* tombstones are stored with the data and read back; a write without
  tombstones leaves them alone;
* ``settle()`` makes the change token agree with the data;
* the leader lease: one holder at a time, renewed and released only by its
  holder, taken over once its holder stops renewing (expiry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork import features as fs
from fh_prefork.store.backend import Snapshot
from fh_prefork.store.file import FileBackend
from fh_prefork.store.lease import Lease
from fh_prefork.store.memcache import MemcacheBackend, make_client, parse_servers
from fh_prefork.store.options import MemcacheSessionStoreOptions, RedisSessionStoreOptions
from fh_prefork.store.redis import RedisBackend
from fh_prefork.store.redis import make_client as make_redis_client
from fh_prefork.testing.memory import MemoryBackend, MemoryMedium
from tests.support.memcached import Memcached
from tests.support.procs import wait_for
from tests.support.redis import Redis, RedisCluster
from tests.support.stores import feat

Factory = Callable[[], Any]
TTL = 2.0   # memcached's expiry ticks once a second: 2 s is the shortest lease it keeps



def state(*pairs: tuple[str, int]) -> tuple[bytes, str]:
    features = [feat(k, v) for k, v in pairs]
    return fs.encode(features), fs.fingerprint(features)


def tombs(*ids: str) -> bytes:
    return ("[" + ",".join(f'{{"id":"{i}","key":"{i}","version":1,"deleted_at":1}}'
                           for i in ids) + "]").encode()


def lease(name: str) -> Lease:
    return Lease(f"host:{name}:nonce", "host", 1000 + len(name), time.time() + TTL)


class BackendContract:
    """The tests; a backend's test class provides ``backends`` and ``abandon``."""

    @pytest.fixture
    def backends(self) -> Iterator[Factory]:
        raise NotImplementedError

    def abandon(self, holder: Any) -> None:
        """The lease holder stops without releasing."""
        raise NotImplementedError

    # -- read, change token, create-if-absent --------------------------------------------------

    def test_an_absent_store_reads_as_nothing(self, backends: Factory) -> None:
        b = backends()
        snap = b.read()
        assert (snap.value, snap.tombstones, snap.change_token) == (None, None, None)
        assert b.change_token() is None

    def test_create_if_absent_then_read_back_with_its_change_token(self,
                                                                   backends: Factory) -> None:
        a, b = backends(), backends()
        value, sha = state(("A", 1))
        token = a.write(value, sha, a.read())
        assert token is not None
        snap = b.read()
        assert snap.value == value and snap.tombstones is None
        assert snap.change_token == token == b.change_token()

    def test_create_if_absent_refuses_when_another_created_first(self,
                                                                 backends: Factory) -> None:
        a, b = backends(), backends()
        empty_a, empty_b = a.read(), b.read()
        first, first_sha = state(("A", 1))
        assert a.write(first, first_sha, empty_a) is not None
        second, second_sha = state(("B", 1))
        assert b.write(second, second_sha, empty_b) is None
        assert b.read().value == first

    def test_change_token_changes_when_the_data_does(self, backends: Factory) -> None:
        a, b = backends(), backends()
        v1, s1 = state(("A", 1))
        t1 = a.write(v1, s1, a.read())
        v2, s2 = state(("A", 2))
        t2 = a.write(v2, s2, a.read())
        assert t1 is not None and t2 is not None and t1 != t2
        assert b.change_token() == t2 == b.read().change_token

    # -- compare-and-set ------------------------------------------------------------------------

    def test_compare_and_set_refuses_a_stale_snapshot(self, backends: Factory) -> None:
        a, b = backends(), backends()
        v1, s1 = state(("A", 1))
        assert a.write(v1, s1, a.read()) is not None
        stale = b.read()
        v2, s2 = state(("A", 2))
        assert a.write(v2, s2, a.read()) is not None
        v3, s3 = state(("A", 1), ("B", 1))
        assert b.write(v3, s3, stale) is None, "a snapshot another writer moved past"
        assert b.read().value == v2
        assert b.write(v3, s3, b.read()) is not None, "a fresh snapshot writes"
        assert a.read().value == v3

    def test_writers_racing_from_one_snapshot_exactly_one_wins(self,
                                                               backends: Factory) -> None:
        seed, seed_sha = state(("S", 1))
        first = backends()
        assert first.write(seed, seed_sha, first.read()) is not None
        writers = [backends() for _ in range(6)]
        snaps = [w.read() for w in writers]
        barrier = threading.Barrier(len(writers))
        won: list[int] = []

        def write(i: int) -> None:
            value, sha = state(("S", 1), (f"W{i}", 1))
            barrier.wait(timeout=10)
            if writers[i].write(value, sha, snaps[i]) is not None:
                won.append(i)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert len(won) == 1, won
        assert first.read().value == state(("S", 1), (f"W{won[0]}", 1))[0]

    # -- tombstones -----------------------------------------------------------------------------

    def test_tombstones_are_stored_with_the_data_and_read_back(self,
                                                               backends: Factory) -> None:
        a, b = backends(), backends()
        value, sha = state(("A", 1))
        assert a.write(value, sha, a.read(), tombs("id-GONE")) is not None
        snap = b.read()
        assert snap.value == value and snap.tombstones == tombs("id-GONE")

    def test_a_write_without_tombstones_leaves_them_alone(self, backends: Factory) -> None:
        a = backends()
        v1, s1 = state(("A", 1))
        assert a.write(v1, s1, a.read(), tombs("id-GONE")) is not None
        v2, s2 = state(("A", 2))
        assert a.write(v2, s2, a.read()) is not None
        assert a.read().tombstones == tombs("id-GONE")

    def test_tombstones_changed_by_another_writer_refuse_the_write(
            self, backends: Factory) -> None:
        a, b = backends(), backends()
        v1, s1 = state(("A", 1))
        assert a.write(v1, s1, a.read(), tombs("id-X")) is not None
        stale = b.read()
        assert a.write(v1, s1, a.read(), tombs("id-X", "id-Y")) is not None
        v2, s2 = state(("A", 2))
        assert b.write(v2, s2, stale, tombs("id-X", "id-Z")) is None
        assert b.read().tombstones == tombs("id-X", "id-Y")

    def test_settle_makes_the_change_token_agree(self, backends: Factory) -> None:
        a = backends()
        value, sha = state(("A", 1))
        assert a.write(value, sha, a.read()) is not None
        snap = a.read()
        token = a.settle(snap, sha)
        assert token is not None and a.change_token() == token

    # -- leader lease ---------------------------------------------------------------------------

    def test_lease_first_contender_wins_and_others_see_it(self, backends: Factory) -> None:
        a, b = backends(), backends()
        assert b.lease_read() is None
        won = a.lease_acquire(lease("a"), TTL)
        assert won.held and won.current is not None and won.valid_for > 0
        lost = b.lease_acquire(lease("b"), TTL)
        assert not lost.held and lost.current is not None
        assert lost.current.holder == lease("a").holder
        seen = b.lease_read()
        assert seen is not None and seen.holder == lease("a").holder

    def test_lease_renew_only_by_its_holder(self, backends: Factory) -> None:
        a, b = backends(), backends()
        held = a.lease_acquire(lease("a"), TTL)
        assert held.held and held.current is not None
        assert a.lease_renew(held.current, TTL).held
        assert not b.lease_renew(lease("b"), TTL).held
        current = b.lease_read()
        assert current is not None and current.holder == lease("a").holder

    def test_lease_release_only_by_its_holder_and_hands_over_at_once(
            self, backends: Factory) -> None:
        a, b = backends(), backends()
        held = a.lease_acquire(lease("a"), TTL)
        assert held.held and held.current is not None
        assert not b.lease_release(lease("b"))
        assert b.lease_read() is not None
        assert a.lease_release(held.current)
        assert b.lease_acquire(lease("b"), TTL).held

    def test_lease_its_holder_abandons_is_taken_over_within_its_ttl(
            self, backends: Factory) -> None:
        a, b = backends(), backends()
        assert a.lease_acquire(lease("a"), TTL).held
        assert not b.lease_acquire(lease("b"), TTL).held
        self.abandon(a)
        wait_for(lambda: b.lease_acquire(lease("b"), TTL).held, TTL + 3, interval=0.05,
                 what="the abandoned lease to lapse")
        current = b.lease_read()
        assert current is not None and current.holder == lease("b").holder


def _built_by(build: Factory) -> Iterator[Factory]:
    """``backends`` for a backend class: each call builds one with ``build``; every backend
    built is closed at teardown."""
    built: list[Any] = []

    def make() -> Any:
        built.append(build())
        return built[-1]

    yield make
    for backend in built:
        backend.close()


class TestMemcache(BackendContract):
    @pytest.fixture
    def backends(self, memcached: Memcached, prefix: str) -> Iterator[Factory]:
        def build() -> MemcacheBackend:
            client = make_client(parse_servers(memcached.url), MemcacheSessionStoreOptions())
            return MemcacheBackend(client, f"{prefix}_env", "contract")

        yield from _built_by(build)

    def abandon(self, holder: Any) -> None:
        pass  # it stops renewing: memcached expires the key


class TestFile(BackendContract):
    @pytest.fixture
    def backends(self, tmp_path: Path, prefix: str) -> Iterator[Factory]:
        yield from _built_by(lambda: FileBackend(tmp_path / "store", f"{prefix}_env"))

    def abandon(self, holder: Any) -> None:
        holder.close()  # what the kernel does when the holder dies: the lock goes with it


class TestRedis(BackendContract):
    @pytest.fixture
    def backends(self, redis_server: Redis, prefix: str) -> Iterator[Factory]:
        def build() -> RedisBackend:
            client = make_redis_client(redis_server.url, RedisSessionStoreOptions())
            return RedisBackend(client, f"{prefix}_env", "contract", cluster=False)

        yield from _built_by(build)

    def abandon(self, holder: Any) -> None:
        pass  # it stops renewing: Redis expires the key


class TestRedisCluster(BackendContract):
    @pytest.fixture
    def backends(self, redis_cluster: RedisCluster, prefix: str) -> Iterator[Factory]:
        def build() -> RedisBackend:
            # built lazily, as the store does: a cluster client connects when built
            options = RedisSessionStoreOptions(timeout=2.0, connect_timeout=2.0)
            return RedisBackend(lambda: make_redis_client(redis_cluster.url, options),
                                f"{prefix}_env", "contract", cluster=True)

        yield from _built_by(build)

    def abandon(self, holder: Any) -> None:
        pass


class TestMemory(BackendContract):
    """The testing kit's in-memory backend: held to the same contract, so the store core's
    logic tested on it means the same on a real server."""

    @pytest.fixture
    def backends(self, prefix: str) -> Iterator[Factory]:
        medium = MemoryMedium()
        yield from _built_by(lambda: MemoryBackend(medium, f"{prefix}_env", "contract"))

    def abandon(self, holder: Any) -> None:
        pass  # it stops renewing: the medium expires the key on its clock


def test_every_backend_plugs_into_the_contract() -> None:
    plugged = {cls.__name__ for cls in BackendContract.__subclasses__()}
    assert plugged == {"TestMemcache", "TestFile", "TestRedis", "TestRedisCluster",
                       "TestMemory"}
    assert Snapshot(None).value is None

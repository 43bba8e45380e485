"""Leader lease semantics on real memcached and the file backend, and the election on top."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.leader import FALLBACK, FOLLOWER, LEADER, EdgeSwitch, Election, Role
from fh_prefork.store.backend import StoreUnavailable
from fh_prefork.store.file import FileBackend
from fh_prefork.store.lease import Lease, LeaseRecord
from fh_prefork.store.memcache import MemcacheBackend, make_client, parse_servers
from fh_prefork.store.options import MemcacheSessionStoreOptions, RedisSessionStoreOptions
from fh_prefork.store.redis import RedisBackend
from fh_prefork.store.redis import make_client as make_redis_client
from tests.conftest import make_config
from tests.support.memcached import Memcached
from tests.support.procs import kill_tree, wait_for

TTL = 2.0


def role_of(election: Election) -> Role:
    """The role now (a call: mypy would keep an attribute narrowed across a step())."""
    return election.role


def lease_of(election: Election) -> LeaseRecord:
    record = election.status()["lease"]
    assert record is not None, "the election names no lease"
    return record


def lease(name: str, ttl: float = TTL) -> Lease:
    return Lease(f"host-{name}:{os.getpid()}:{name}", f"host-{name}", os.getpid(),
                 time.time() + ttl)


@pytest.fixture
def backends(backend_kind: str, memcached: Memcached, prefix: str, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[Callable[[], Any]]:
    """Independent backends (separate connections / file descriptors) on one store."""
    built: list[Any] = []

    def make() -> Any:
        backend: Any
        if backend_kind == "memcache":
            client = make_client(parse_servers(memcached.url), MemcacheSessionStoreOptions())
            backend = MemcacheBackend(client, f"{prefix}_env", "test")
        elif backend_kind == "redis":
            url = request.getfixturevalue("redis_server").url
            backend = RedisBackend(make_redis_client(url, RedisSessionStoreOptions()),
                                   f"{prefix}_env", "test", cluster=False)
        else:
            backend = FileBackend(tmp_path / "store", f"{prefix}_env")
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()


def test_first_contender_wins_and_others_see_it(backends: Callable[[], Any]) -> None:
    a, b = backends(), backends()
    got = a.lease_acquire(lease("a"), TTL)
    assert got.held and got.current is not None and got.current.holder == lease("a").holder
    assert got.valid_for > 0
    other = b.lease_acquire(lease("b"), TTL)
    assert not other.held
    assert other.current is not None and other.current.holder == lease("a").holder
    assert b.lease_read() == a.lease_read() and b.lease_read() is not None
    # renewing is the holder's privilege
    assert a.lease_renew(lease("a"), TTL).held
    assert not b.lease_renew(lease("b"), TTL).held
    assert a.lease_read().holder == lease("a").holder
    # acquiring what we already hold is a renewal
    assert a.lease_acquire(lease("a"), TTL).held


def test_release_hands_over_at_once_and_only_the_holder_releases(
        backends: Callable[[], Any]) -> None:
    a, b = backends(), backends()
    mine = a.lease_acquire(lease("a"), TTL).current
    assert not b.lease_release(lease("b"))
    assert b.lease_read() is not None, "a non-holder's release removed the lease"
    assert a.lease_release(mine)
    assert b.lease_read() is None
    assert b.lease_acquire(lease("b"), TTL).held
    assert not a.lease_renew(mine, TTL).held, "a released lease came back"


@pytest.mark.parametrize("backend_kind", ["memcache", "redis"])  # the file lease is a lock held for
def test_a_lease_nobody_renews_expires_within_its_ttl(  # its holder's life: see the kill test
        backend_kind: str, backends: Callable[[], Any]) -> None:
    a, b = backends(), backends()
    assert a.lease_acquire(lease("a"), TTL).held
    started = time.monotonic()
    wait_for(lambda: b.lease_acquire(lease("b"), TTL).held, TTL + 2, interval=0.05,
             what="the lease to expire")
    took = time.monotonic() - started
    assert took <= TTL + 1.0
    # memcached's clock ticks once a second: the lease lived at least ttl - 1
    assert took >= TTL - 1 - 0.2
    assert not a.lease_renew(lease("a"), TTL).held


def test_lost_lease_when_the_key_vanishes(backend_kind: str, backends: Callable[[], Any],
                                          memcached: Memcached, prefix: str,
                                          tmp_path: Path) -> None:
    a, b = backends(), backends()
    assert a.lease_acquire(lease("a"), TTL).held
    if backend_kind != "file":
        a._client.delete(f"{prefix}_env_leader")  # what a memcached restart looks like
    else:
        (tmp_path / "store" / f"{prefix}_env.leader").unlink()
    assert b.lease_acquire(lease("b"), TTL).held
    lost = a.lease_renew(lease("a"), TTL)
    assert not lost.held
    assert lost.current is not None and lost.current.holder == lease("b").holder


def _contend(i: int, backend: Any, barrier: threading.Barrier, results: list[bool]) -> None:
    barrier.wait(timeout=10)
    results.append(backend.lease_acquire(lease(f"c{i}"), TTL).held)


def test_two_contenders_racing_get_one_lease(backends: Callable[[], Any]) -> None:
    for _round in range(5):
        contenders = [backends() for _ in range(8)]
        barrier = threading.Barrier(len(contenders))
        results: list[bool] = []

        threads = [threading.Thread(target=_contend, args=(i, b, barrier, results))
                   for i, b in enumerate(contenders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)
        assert sum(results) == 1, results
        holder = contenders[0].lease_read()
        winner = next(b for i, b in enumerate(contenders)
                      if holder is not None and holder.holder == lease(f"c{i}").holder)
        assert winner.lease_release(holder)


def test_lease_record_is_the_documented_json(backend_kind: str, backends: Callable[[], Any],
                                             memcached: Memcached, prefix: str,
                                             tmp_path: Path) -> None:
    a = backends()
    before = time.time()
    assert a.lease_acquire(lease("a"), TTL).held
    if backend_kind != "file":
        raw = a._client.get(f"{prefix}_env_leader")
    else:
        path = tmp_path / "store" / f"{prefix}_env.leader"
        assert (path.stat().st_mode & 0o777) == 0o600
        raw = path.read_bytes()
    data = json.loads(raw)
    assert set(data) == {"holder", "host", "pid", "expires_at"}
    assert data["holder"] == lease("a").holder and data["host"] == "host-a"
    assert data["pid"] == os.getpid()
    assert before + TTL - 1 <= data["expires_at"] <= time.time() + TTL + 1


def test_junk_lease_is_taken_over_not_obeyed_forever(memcached: Memcached, prefix: str) -> None:
    client = make_client(parse_servers(memcached.url), MemcacheSessionStoreOptions())
    backend = MemcacheBackend(client, f"{prefix}_env", "test")
    try:
        client.set(f"{prefix}_env_leader", b"\x80\x04junk", expire=0)
        assert backend.lease_read() is None
        assert backend.lease_acquire(lease("a"), TTL).held
    finally:
        backend.close()


HOLD = """
import sys, time
from pathlib import Path
from fh_prefork.store.file import FileBackend
from fh_prefork.store.lease import Lease
b = FileBackend(Path(sys.argv[1]), sys.argv[2])
assert b.lease_acquire(Lease("child:1:x", "child", 1, time.time() + 2), 2).held
print("held", flush=True)
sys.stdin.read()  # hold the lock until the test kills us
"""


def test_file_lease_dies_with_a_killed_holder(prefix: str, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir(mode=0o700)
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), f"{prefix}_env"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env={**os.environ,
                                  "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    backend = FileBackend(folder, f"{prefix}_env")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"held"
        assert not backend.lease_acquire(lease("a"), TTL).held
        assert backend.lease_read() is not None
        assert backend.lease_read().holder == "child:1:x"  # type: ignore[union-attr]
        kill_tree(child.pid)
        child.wait(timeout=5)
        assert backend.lease_read() is None  # nobody holds the lock: the record is history
        assert backend.lease_acquire(lease("a"), TTL).held
    finally:
        kill_tree(child.pid)
        backend.close()


def test_file_lease_refuses_a_foreign_writable_file(prefix: str, tmp_path: Path) -> None:
    folder = tmp_path / "store"
    backend = FileBackend(folder, f"{prefix}_env")
    path = folder / f"{prefix}_env.leader"
    path.write_bytes(b"")
    path.chmod(0o666)
    try:
        with pytest.raises(StoreUnavailable):
            backend.lease_acquire(lease("a"), TTL)
    finally:
        backend.close()


# -- the election, on real backends ------------------------------------------------------------


class Roles:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, old: str, new: str) -> None:
        self.seen.append((old, new))


def election(backend: Any, roles: Roles | None = None, **kw: Any) -> Election:
    kw.setdefault("ttl", TTL)
    kw.setdefault("follow_seconds", 0.3)
    return Election(backend, on_role=roles, **kw)


def test_election_roles_hand_over_and_log_once(backends: Callable[[], Any],
                                               caplog: pytest.LogCaptureFixture) -> None:
    ra, rb = Roles(), Roles()
    a, b = election(backends(), ra, pid=101), election(backends(), rb, pid=102)
    a.step()
    b.step()
    assert (a.role, b.role) == (LEADER, FOLLOWER)
    assert ra.seen == [(FOLLOWER, LEADER)] and rb.seen == [(FOLLOWER, FOLLOWER)]
    assert lease_of(b)["pid"] == 101 and lease_of(a)["pid"] == 101
    for _ in range(3):
        a.step()
        b.step()
    assert ra.seen == [(FOLLOWER, LEADER)] and len(rb.seen) == 1, "role change reported twice"
    messages = [r.getMessage() for r in caplog.records if "fh_prefork: worker 10" in
                r.getMessage()]
    assert sum("101 is now the leader (lease ttl 2 s)" in m for m in messages) == 1, messages
    assert sum("102 is now a follower, leader is" in m for m in messages) == 1, messages
    assert a.release()
    b.step()
    assert role_of(b) == LEADER and lease_of(b)["pid"] == 102


def test_election_leader_that_lost_the_lease_steps_down(
        backend_kind: str, backends: Callable[[], Any], prefix: str, tmp_path: Path) -> None:
    ra = Roles()
    ba, bb = backends(), backends()
    a, b = election(ba, ra), election(bb)
    a.step()
    assert role_of(a) == LEADER
    if backend_kind != "file":
        ba._client.delete(f"{prefix}_env_leader")
    else:
        (tmp_path / "store" / f"{prefix}_env.leader").unlink()
    b.step()
    assert role_of(b) == LEADER
    a.step()
    assert role_of(a) == FOLLOWER and ra.seen[-1] == (LEADER, FOLLOWER)
    assert lease_of(a)["holder"] == b.holder


def test_election_falls_back_when_the_store_is_unreachable_and_returns(
        prefix: str) -> None:
    server = Memcached().start()
    try:
        options = MemcacheSessionStoreOptions(timeout=0.2, connect_timeout=0.2)

        def backend() -> MemcacheBackend:
            return MemcacheBackend(make_client(parse_servers(server.url), options),
                                   f"{prefix}_env", "test")

        ra, rb = Roles(), Roles()
        a, b = election(backend(), ra), election(backend(), rb, fallback_after=2)
        a.step()
        b.step()
        assert (a.role, b.role) == (LEADER, FOLLOWER)
        server.stop()
        b.step()
        assert role_of(b) == FOLLOWER, "one failed attempt is not an outage"
        b.step()
        assert role_of(b) == FALLBACK and rb.seen[-1] == (FOLLOWER, FALLBACK)
        a.step()
        assert role_of(a) == LEADER, "the leader keeps its lease inside its validity window"
        wait_for(lambda: a.step() is not None and role_of(a) == FALLBACK, TTL + 2, interval=0.1,
                 what="the leader to fall back once its lease lapsed")
        assert ra.seen[-1] == (LEADER, FALLBACK)
        server.start()  # empty, on the same port
        wait_for(lambda: b.step() is not None and b.role != FALLBACK, 5, interval=0.1,
                 what="the follower to leave fallback")
        a.step()
        assert sorted([a.role, b.role]) == [FOLLOWER, LEADER]
    finally:
        server.stop()


def test_a_release_racing_a_takeover_leaves_the_new_holders_lease(
        backend_kind: str, backends: Callable[[], Any], prefix: str) -> None:
    """memcached has no compare-and-delete: between the release's read and its write the
    lease may expire and pass on. The release is a compare-and-set, so it fails then.
    (Redis releases in one Lua script and the embedded store under its lock.)"""
    if backend_kind != "memcache":
        pytest.skip("atomic by construction on this backend")
    a, b = backends(), backends()
    mine = a.lease_acquire(lease("a"), TTL).current
    assert mine is not None
    real_gets = a._client.gets

    def gets_then_lose_it(key: str, *args: Any, **kw: Any) -> Any:
        answer = real_gets(key, *args, **kw)
        if key == a.lease_key:      # our lease expires, b takes it, before our write
            a._client.delete(a.lease_key)
            assert b.lease_acquire(lease("b"), TTL).held
        return answer

    a._client.gets = gets_then_lose_it
    assert not a.lease_release(mine)
    current = b.lease_read()
    assert current is not None and current.holder == lease("b").holder


# -- the store task hook and the Edge switch ---------------------------------------------------


def test_store_runs_tasks_and_closing_hooks_on_its_own_thread_as_it_stops(
        make_store: Callable[..., Any]) -> None:
    store = make_store()
    threads: list[str] = []
    closed: list[tuple[str, bool]] = []

    def task() -> float:
        threads.append(threading.current_thread().name)
        return 0.05

    store.add_task(task, on_close=lambda: closed.append(
        (threading.current_thread().name, store._closed)), name="probe")
    wait_for(lambda: len(threads) >= 5, 10, what="5 task runs")
    assert set(threads) == {store._thread.name}
    store.close(flush_timeout=0.5)
    assert closed == [(store._thread.name, True)], "once, on the store thread, after close()"
    assert not store._thread.is_alive()
    runs = len(threads)
    store.close(flush_timeout=0.5)
    assert len(threads) == runs and len(closed) == 1


def test_edge_switch_never_connects_on_poll_and_starts_one_edge_per_term() -> None:
    import asyncio

    made: list[Any] = []

    class FakeEdge:
        def __init__(self) -> None:
            self.started = self.closed = False

        def start(self) -> None:
            self.started = True

        def close(self, timeout: float = 1.0) -> None:
            self.closed = True

        def status(self) -> dict[str, Any]:
            return {"state": "connected"}

    def factory() -> Any:
        made.append(FakeEdge())
        return made[-1]

    switch = EdgeSwitch(factory)
    config = make_config()
    config.edge_service_provider(lambda repository, api_keys, edge_url: switch)
    asyncio.run(config.new_context().build())
    asyncio.run(config.init())
    assert made == [] and switch.status()["state"] == "standby"
    assert switch.start() and not switch.start()
    assert made[0].started and switch.status()["state"] == "connected"
    switch.stop()
    assert made[0].closed and switch.status()["state"] == "standby"
    assert switch.start() and len(made) == 2
    switch.close()
    assert made[1].closed and not switch.start()


def test_lease_settings_defaults_and_validation() -> None:
    from fh_prefork import settings as s

    base = {"FEATUREHUB_EDGE_URL": "http://edge:8085", "FEATUREHUB_API_KEY": "a/b/c*d",
            "FH_PREFORK_EDGE_MODE": "leader"}
    loaded = s.load(base)
    assert loaded.lease_seconds == 10 and loaded.lease_renew_seconds == pytest.approx(10 / 3)
    assert loaded.refresh_seconds == 1.0
    loaded = s.load({**base, "FH_PREFORK_LEASE_SECONDS": "3"})
    assert loaded.lease_renew_seconds == 1.0
    assert s.load({**base, "FH_PREFORK_LEASE_RENEW_SECONDS": "2"}).lease_renew_seconds == 2.0
    with pytest.raises(s.SettingsError, match="FH_PREFORK_LEASE_RENEW_SECONDS"):
        s.load({**base, "FH_PREFORK_LEASE_SECONDS": "3", "FH_PREFORK_LEASE_RENEW_SECONDS": "3"})


def leader_and_follower(backends: Callable[[], Any], **leader: Any
                        ) -> tuple[Election, Election]:
    """Two elections on one store, ``a`` leading (with ``leader``'s callbacks), ``b``
    following: what the leader puts in its lease reaches ``b`` at the next two steps."""
    a = Election(backends(), ttl=2.0, renew_seconds=0.5, follow_seconds=0.2, pid=201, **leader)
    b = Election(backends(), ttl=2.0, renew_seconds=0.5, follow_seconds=0.2, pid=202)
    a.step()
    b.step()
    assert (a.role, b.role) == (LEADER, FOLLOWER)
    return a, b


def test_followers_learn_the_leaders_edge_state_from_the_lease(
        backends: Callable[[], Any]) -> None:
    """Followers never talk to Edge: a deleted API key (Edge 404) reaches them in the lease."""
    edge = ["connected"]
    a, b = leader_and_follower(backends, edge_state=lambda: edge[0])
    assert lease_of(b)["edge"] == "connected"
    edge[0] = "key_not_found"
    a.step()                       # the renewal carries the new state
    b.step()
    assert lease_of(b)["edge"] == "key_not_found"
    assert Lease.decode(Lease("h", "x", 1, 2.0, "key_not_found").encode()) == Lease(
        "h", "x", 1, 2.0, "key_not_found")
    assert Lease.decode(b'{"holder":"h","host":"x","pid":1,"expires_at":2}') == Lease(
        "h", "x", 1, 2.0), "a record without edge (an older fh_prefork) still reads"


def test_followers_fall_back_while_the_leader_says_its_state_does_not_fit(
        backends: Callable[[], Any]) -> None:
    """The store still holds an older state that fitted: only the leader knows its newer
    one is over the item limit, and its followers must not serve the older one meanwhile."""
    problem: list[str | None] = [None]
    a, b = leader_and_follower(backends, write_problem=lambda: problem[0])
    problem[0] = "the state (1300000 bytes) is over the store's 1048576-byte item limit"
    a.step()                       # the renewal carries it
    b.step()
    assert role_of(b) == FALLBACK, b.status()
    assert b.fallback_reason == f"the leader cannot write the state: {problem[0]}"
    assert lease_of(b)["store"] == problem[0]
    problem[0] = None              # the state fits again (written, or shrunk)
    a.step()
    b.step()
    assert role_of(b) == FOLLOWER, b.status()
    record = Lease("h", "x", 1, 2.0, "connected", "over the limit")
    assert Lease.decode(record.encode()) == record
    assert Lease.decode(b'{"holder":"h","host":"x","pid":1,"expires_at":2,"store":5}') == Lease(
        "h", "x", 1, 2.0), "junk in the field is no problem"


# -- a vanished lease stays its holder's -------------------------------------------------------


def vanish(backend_kind: str, backend: Any, prefix: str, tmp_path: Path) -> None:
    """What eviction, a store restarted empty or a cleaned folder does to the lease."""
    if backend_kind != "file":
        backend._client.delete(f"{prefix}_env_leader")
    else:
        (tmp_path / "store" / f"{prefix}_env.leader").unlink()


def test_a_vanished_lease_is_taken_back_by_its_holder_and_left_alone_by_contenders(
        backend_kind: str, backends: Callable[[], Any], prefix: str, tmp_path: Path) -> None:
    a, b = backends(), backends()
    assert a.lease_acquire(lease("a"), TTL).held
    vanish(backend_kind, a, prefix, tmp_path)
    left = b.lease_acquire(lease("b"), TTL, vacant=False)
    assert not left.held and left.current is None, "a contender took a vacant lease"
    back = a.lease_renew(lease("a"), TTL)
    assert back.held and back.retaken and back.current is not None
    assert back.current.holder == lease("a").holder
    other = b.lease_acquire(lease("b"), TTL, vacant=False)
    assert not other.held and other.current is not None
    assert other.current.holder == lease("a").holder
    again = a.lease_renew(lease("a"), TTL)
    assert again.held and not again.retaken, "an ordinary renewal said it took the lease back"


def test_a_released_lease_is_free_at_once_even_for_a_contender_that_waits(
        backends: Callable[[], Any]) -> None:
    a, b = backends(), backends()
    mine = a.lease_acquire(lease("a"), TTL).current
    assert mine is not None and a.lease_release(mine)
    got = b.lease_acquire(lease("b"), TTL, vacant=False)
    assert got.held, "a released lease waited for its time to live"


def test_election_holder_keeps_a_vanished_lease_and_followers_leave_it(
        backend_kind: str, backends: Callable[[], Any], prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    ra, rb = Roles(), Roles()
    ba, bb = backends(), backends()
    a, b = election(ba, ra, pid=301), election(bb, rb, pid=302)
    a.step()
    b.step()
    assert (a.role, b.role) == (LEADER, FOLLOWER)
    vanish(backend_kind, ba, prefix, tmp_path)
    for _ in range(3):
        b.step()
        assert role_of(b) == FOLLOWER, "a follower took the vacant lease of a live holder"
    a.step()
    assert role_of(a) == LEADER and ra.seen == [(FOLLOWER, LEADER)], ra.seen
    assert a.status()["lease_retaken"] == 1
    b.step()
    assert role_of(b) == FOLLOWER and lease_of(b)["holder"] == a.holder
    assert rb.seen == [(FOLLOWER, FOLLOWER)]
    text = caplog.text
    assert "lost the leader lease" not in text
    assert "301 took back the leader lease" in text
    assert "302 found the leader lease vacant" in text


def test_election_follower_takes_a_vacant_lease_once_its_holders_time_has_run_out(
        backend_kind: str, backends: Callable[[], Any], prefix: str, tmp_path: Path) -> None:
    """The holder is gone for good (it never renews again) and its lease vanished: a
    follower that saw it waits out its time to live, then leads."""
    ba, bb = backends(), backends()
    a, b = election(ba, pid=401), election(bb, pid=402)
    a.step()
    b.step()
    seen_at = time.monotonic()
    assert (a.role, b.role) == (LEADER, FOLLOWER)
    vanish(backend_kind, ba, prefix, tmp_path)    # and ``a`` never steps again
    if backend_kind == "file":
        ba.close()   # a dead holder's lock goes with it (here: it had already lost its file)

    def leads() -> bool:
        b.step()
        return role_of(b) == LEADER

    wait_for(leads, TTL + 3, interval=0.05, what="the follower to take the lease")
    took = time.monotonic() - seen_at
    print(f"{backend_kind}: vacant lease taken {took:.2f} s after the holder was last seen")
    assert took >= TTL - 0.2, "the follower did not wait out the holder's time to live"


def test_file_lease_of_a_dead_holder_is_taken_at_once(tmp_path: Path, prefix: str) -> None:
    """On the embedded store the lock is the proof of life: a holder that died (its lock
    gone, its file still there) is gone at once, whatever the follower remembers."""
    ba = FileBackend(tmp_path / "store", f"{prefix}_env")
    bb = FileBackend(tmp_path / "store", f"{prefix}_env")
    a, b = election(ba, pid=501), election(bb, pid=502, ttl=30.0)
    try:
        a.step()
        b.step()
        assert (a.role, b.role) == (LEADER, FOLLOWER)
        ba.close()           # the lock dies with its process
        b.step()
        assert role_of(b) == LEADER
    finally:
        ba.close()
        bb.close()


@pytest.mark.parametrize("backend_kind", ["memcache", "redis"])
def test_election_follower_takes_over_a_silent_holder_within_its_ttl(
        backend_kind: str, backends: Callable[[], Any]) -> None:
    """A holder that stops renewing (SIGKILL) leaves its record until it expires; the
    follower counts the holder's time from its last renewal, not from its last sighting
    of that same record, so the take-over is not delayed by a second time to live."""
    a, b = election(backends(), pid=601), election(backends(), pid=602, follow_seconds=0.1)
    a.step()
    renewed = time.monotonic()       # ``a`` never steps again
    b.step()
    assert role_of(b) == FOLLOWER

    def leads() -> bool:
        b.step()
        return role_of(b) == LEADER

    wait_for(leads, 2 * TTL + 3, interval=0.05, what="the follower to take the lease")
    took = time.monotonic() - renewed
    print(f"{backend_kind}: silent holder replaced {took:.2f} s after its last renewal")
    assert took <= TTL + 1.0, took

"""A lease that vanishes stays its holder's: real gunicorn workers, real memcached and Redis.

The lease key is the only key with an expiry, so ``volatile-lru`` and
``allkeys-lru`` evict it first; a store restarted without persistence loses it
too, and one down for two seconds comes back without it. The holder is alive
and renews within a renewal period: it must take the lease back and keep its
Edge stream, and no follower may take the vacant lease meanwhile. A sampler
reads the lease key straight from the store every 20 ms throughout, so a
second holder, however brief, is seen; the time the key named nobody is
printed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from pymemcache.client.base import Client

from fh_prefork.store.lease import Lease
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, environment_id
from tests.leader.test_leader_servers import FAILOVER_BOUND, LEADER_ENV, TTL, settled_leader
from tests.servers.conftest import API_KEY, edge, server_env, start_cluster  # noqa: F401  # fixtures
from tests.support.memcached import Memcached
from tests.support.procs import wait_for
from tests.support.redis import Redis

#: How long the store is down in the "down" case (the issue saw Redis down 2 s hand the
#: lease over), and the lease then: long enough to outlive it, as the default 10 s does.
DOWN = 2.0
DOWN_TTL = 8.0


def lease_reader(store: str, server: Memcached | Redis, key: str) -> Callable[[], Any]:
    """() -> the lease's holder pid (None: absent or unreadable; 'down': unreachable)."""
    if store == "memcache":
        assert isinstance(server, Memcached)
        port = server.port

        def read_memcached() -> Any:
            client = Client(("127.0.0.1", port), connect_timeout=0.5, timeout=0.5)
            try:
                lease = Lease.decode(client.get(key))
            except OSError:
                return "down"
            finally:
                client.close()
            return lease.pid if lease is not None else None
        return read_memcached

    import redis

    client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def read_redis() -> Any:
        try:
            raw = client.get(key)
        except redis.RedisError:
            return "down"
        lease = Lease.decode(raw if isinstance(raw, bytes) else None)
        return lease.pid if lease is not None else None
    return read_redis


@dataclass
class Watch:
    """(monotonic time, holder) samples of the lease key."""

    samples: list[tuple[float, Any]] = field(default_factory=list)

    def holders(self) -> set[Any]:
        return {h for _, h in self.samples}

    def unheld_seconds(self, leader: int) -> tuple[float, float]:
        """Total and longest time the key named nobody (absent, or the store down)."""
        total = longest = run = 0.0
        for (t0, h0), (t1, _) in zip(self.samples, self.samples[1:], strict=False):
            if h0 != leader:
                run += t1 - t0
                total += t1 - t0
                longest = max(longest, run)
            else:
                run = 0.0
        return total, longest


@contextmanager
def watching(read: Callable[[], Any]) -> Iterator[Watch]:
    watch = Watch()
    stop = threading.Event()

    def run() -> None:
        deadline = time.monotonic() + 120        # bounded whatever the test does
        while not stop.is_set() and time.monotonic() < deadline:
            watch.samples.append((time.monotonic(), read()))
            stop.wait(0.02)

    thread = threading.Thread(target=run, name="lease-watch", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join(timeout=5)


@pytest.mark.parametrize("fault", ["delete", "restart", "down"])
@pytest.mark.parametrize("store", ["memcache", "redis"])
def test_the_leader_keeps_a_lease_that_vanished(
        store: str, fault: str, start_cluster: Callable[..., Cluster],  # noqa: F811
        edge: EdgeSimulator, prefix: str, request: pytest.FixtureRequest) -> None:  # noqa: F811
    server: Memcached | Redis = request.getfixturevalue(
        "own_memcached" if store == "memcache" else "own_redis")
    key = f"{prefix}_{environment_id(API_KEY)}_leader"
    read = lease_reader(store, server, key)
    # down for DOWN seconds: a lease long enough that its holder's stays valid meanwhile
    ttl = DOWN_TTL if fault == "down" else TTL
    cluster = start_cluster("gunicorn", 4, env={**LEADER_ENV, "FH_PREFORK_STORE": server.url,
                                                "FH_PREFORK_LEASE_SECONDS": str(ttl)})
    leader = settled_leader([cluster], edge, FAILOVER_BOUND + 10, read)
    stream = next(s for s in edge.streams() if edge.stream_pid(s) == leader)
    connections = edge.total_stream_connections
    terms = cluster.statuses()[leader]["election"]["terms"]

    with watching(read) as watch:
        time.sleep(0.3)
        faulted = time.monotonic()
        if fault == "delete":      # what eviction does
            if store == "memcache":
                client = Client(("127.0.0.1", server.port), connect_timeout=1, timeout=1)
                assert client.delete(key, noreply=False)
                client.close()
            else:
                import redis

                assert redis.Redis.from_url(server.url).delete(key) == 1
        elif fault == "restart":   # restarted empty, on the same port
            server.restart()
        else:                      # down a while, then back empty
            server.stop()
            time.sleep(DOWN)
            server.start()
        wait_for(lambda: read() == leader, FAILOVER_BOUND, interval=0.02,
                 what="the lease to name its holder again")
        back = time.monotonic() - faulted
        time.sleep(ttl + 2.0)      # past the time to live a follower counts for the holder

    total, longest = watch.unheld_seconds(leader)
    holders = watch.holders() - {None, "down"}
    print(f"{store} {fault}: lease named its holder again {back:.2f} s after the fault; "
          f"no holder in the store for {total:.2f} s (longest gap {longest:.2f} s); "
          f"holders seen {sorted(holders)}; stream connections "
          f"{edge.total_stream_connections - connections} since")
    assert holders == {leader}, f"the lease changed hands: {holders} (leader {leader})"
    open_ids = {s.id for s in edge.streams()}
    assert stream.id in open_ids, "the holder closed its Edge stream"
    assert [s for s in edge.streams() if s.id != stream.id and edge.stream_pid(s) == leader] \
        == [], "the holder opened another Edge stream"
    status = cluster.statuses()[leader]
    assert status["role"] == "leader" and status["election"]["terms"] == terms, status
    assert status["election"]["lease_retaken"] >= 1, status["election"]
    others = {pid: s["role"] for pid, s in cluster.statuses().items() if pid != leader}
    assert "leader" not in others.values(), others
    log = cluster.log_text()
    assert "lost the leader lease" not in log
    if fault == "delete":
        # nothing else happened to the store: not one worker opened a stream
        assert edge.total_stream_connections == connections, edge.state()

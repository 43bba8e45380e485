"""What a store fault costs while it lasts: every fault family, measured with real workers.

Each case starts 4 gunicorn workers on a store, then, inside one measured window
(``tests/support/cost.py``): the fault starts, Edge sends an update during it,
the fault ends, and the window goes on until the update is in the store and
a few seconds after. The workers' CPU must stay within idling's bounds and no
request may go unanswered: a spin or a stall fails, a slow machine does not.
The state must end whole, as in the other fault tests.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.cost import assert_cost, measure_cost
from tests.support.memcached import Memcached
from tests.support.procs import hold_for, port_open, wait_for
from tests.support.proxy import FaultyProxy
from tests.support.redis import Redis

from .whole_state import (
    StoreReader,
    many_features,
    memcached_reader,
    redis_reader,
    wait_converged,
)

StartCluster = Callable[..., Cluster]
#: seconds a fault lasts: several refresh periods and retry times
FAULT_SECONDS = 4.0
#: seconds measured after the state converged again: a spin left behind shows here
AFTER_SECONDS = 5.0
SETTLE = 2 * REFRESH * 1.2 + 8.0

#: a fault: a context manager for its duration
Fault = Callable[[], AbstractContextManager[None]]


def _paused(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _run_case(start_cluster: StartCluster, edge: EdgeSimulator, url: str, store: StoreReader,
              fault: Fault) -> None:
    edge.set_features(many_features(8))
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": url})
    wait_converged(edge, cluster, store, 15, "initial state")
    with measure_cost(cluster) as idle:
        hold_for(3)
    with measure_cost(cluster) as cost:
        with fault():
            hold_for(FAULT_SECONDS / 2)
            edge.push_feature(make_feature("FLAG", False, 2))
            hold_for(FAULT_SECONDS / 2)
        wait_converged(edge, cluster, store, SETTLE, "every feature once the fault ended")
        hold_for(AFTER_SECONDS)
    print(f"idle: {idle.summary()}")
    assert_cost(cost, idle)


@pytest.mark.parametrize("how", ["restart", "pause", "refusal", "timeout"])
def test_a_memcached_fault_costs_what_idling_costs(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str, how: str) -> None:
    store = memcached_reader(own_memcached.address, prefix)
    url = own_memcached.url
    proxy: FaultyProxy | None = None
    if how == "timeout":
        proxy = FaultyProxy(own_memcached.port).start()
        url = f"memcache://{proxy.address}"

    @contextmanager
    def fault() -> Iterator[None]:
        if how == "restart":            # a crash and a supervisor's restart, on its port
            own_memcached.restart()
            yield
        elif how == "pause":            # SIGSTOP: connections accepted, nothing answered
            assert own_memcached.proc is not None
            yield from _paused(own_memcached.proc.pid)
        elif how == "refusal":          # down: connections refused, then back empty
            own_memcached.stop()
            wait_for(lambda: not port_open(own_memcached.port), 5, what="port closed")
            try:
                yield
            finally:
                own_memcached.start()
        else:                           # every call times out
            assert proxy is not None
            proxy.blackhole = True
            try:
                yield
            finally:
                proxy.blackhole = False

    try:
        _run_case(start_cluster, edge, url, store, fault)
    finally:
        if proxy is not None:
            proxy.stop()


@pytest.mark.parametrize("how", ["restart", "pause"])
def test_a_redis_fault_costs_what_idling_costs(
        start_cluster: StartCluster, own_redis: Redis, edge: EdgeSimulator, prefix: str,
        how: str) -> None:
    store = redis_reader(own_redis.url, prefix)

    @contextmanager
    def fault() -> Iterator[None]:
        if how == "restart":
            own_redis.stop()
            try:
                yield
            finally:
                own_redis.start()
        else:
            assert own_redis.proc is not None
            yield from _paused(own_redis.proc.pid)

    _run_case(start_cluster, edge, own_redis.url, store, fault)


# The embedded store's fault (a full disk) is measured the same way in test_file_store.py.

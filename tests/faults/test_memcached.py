"""memcached restarted, stopped, hung, slow or absent: workers keep serving, nothing is lost.

"Nothing lost" is the whole state: once the fault clears, every worker serves
every one of Edge's features and the store holds them (``wait_converged``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from pymemcache.client.base import Client

from fh_prefork import features as fs
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.cost import assert_cost, measure_cost
from tests.support.memcached import Memcached
from tests.support.procs import free_port, hold_for, wait_for
from tests.support.proxy import FaultyProxy
from tests.support.servers import fh_log_lines, versions

from .whole_state import many_features, memcached_reader, wait_converged

StartCluster = Callable[..., Cluster]
DATA_KEY_ENV = "env-srv"
BOUND = 2 * REFRESH * 1.2 + 3.0
#: a whole-state wait after a fault: two refresh periods, a reconnect, a loaded 2-core box
SETTLE = BOUND + 5


def stored(port: int, prefix: str) -> dict[str, int] | None:
    """key -> version held in memcached, or None when the key is absent or unreachable."""
    client = Client(("127.0.0.1", port), connect_timeout=0.5, timeout=0.5)
    try:
        raw = client.get(f"{prefix}_{DATA_KEY_ENV}")
    except Exception:
        return None
    finally:
        client.close()
    if raw is None:
        return None
    return {f["key"]: f["version"] for f in fs.decode(raw, 10**8).features}


def request_latencies(cluster: Cluster, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.monotonic()
        cluster.get("/flags?key=FLAG", timeout=5)
        out.append(time.monotonic() - started)
    return out


def test_restarted_empty_memcached_is_seeded_again_within_a_refresh(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str) -> None:
    edge.set_features(many_features(8))
    store = memcached_reader(own_memcached.address, prefix)
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": own_memcached.url})
    before = wait_converged(edge, cluster, store, 10, "initial state")
    own_memcached.restart()
    started = time.monotonic()
    wait_for(lambda: stored(own_memcached.port, prefix), BOUND, what="store seeded")
    print(f"store seeded again {time.monotonic() - started:.2f} s after memcached restarted")
    wait_converged(edge, cluster, store, BOUND, "every feature back in the store, none lost",
                   never_lose={pid: set(state) for pid, state in before.items()})


def test_updates_during_memcached_outage_reach_the_store_when_it_returns(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str) -> None:
    edge.set_features(many_features(8))
    store = memcached_reader(own_memcached.address, prefix)
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": own_memcached.url})
    assert edge.wait_for_streams(4, 10)
    before = wait_converged(edge, cluster, store, 10, "initial state")
    outage_start = time.monotonic()
    own_memcached.stop()
    edge.push_feature(make_feature("FLAG", False, 2))                   # every worker gets it
    edge.push_feature(make_feature("ONLY_ONE", True, 1), edge.streams()[0].id)  # one worker
    wait_for(lambda: set(versions(cluster).values()) == {2}, 10, what="v2 in memory")
    wait_for(lambda: all(s["store"]["healthy"] is False for s in cluster.statuses().values()),
             BOUND * 2, what="every worker to notice the outage")
    ticks = {pid: s["store"]["counters"]["refreshes"] for pid, s in cluster.statuses().items()}
    wait_for(lambda: all(s["store"]["counters"]["refreshes"] >= ticks[pid] + 5
                         for pid, s in cluster.statuses().items()), 15,
             what="five refresh ticks into the outage in every worker")
    own_memcached.start()
    outage = time.monotonic() - outage_start
    held = wait_for(lambda: (h := stored(own_memcached.port, prefix)) and
                    h.get("ONLY_ONE") == 1 and h, BOUND * 2, what="store to catch up")
    assert held["FLAG"] == 2
    wait_for(lambda: all(f["ONLY_ONE"]["version"] == 1 for f in cluster.flags("ONLY_ONE").values()),
             BOUND, what="one-stream update to reach everyone through the store")
    wait_converged(edge, cluster, store, SETTLE, "every feature after the outage",
                   never_lose={pid: set(state) for pid, state in before.items()})
    errors = [line for line in fh_log_lines(cluster) if "unreachable" in line]
    print(f"{outage:.1f} s outage: {len(errors)} log line(s) from 4 workers")
    assert 4 <= len(errors) <= 4 * 2, errors   # each worker says it, once (and maybe a repeat)
    assert sum("is back" in line for line in fh_log_lines(cluster)) >= 4


def test_memcached_that_never_answers_does_not_touch_the_request_path(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str) -> None:
    edge.set_features(many_features(8))
    store = memcached_reader(own_memcached.address, prefix)
    with FaultyProxy(own_memcached.port) as proxy:
        cluster = start_cluster("gunicorn", 4, env={
            "FH_PREFORK_STORE": f"memcache://{proxy.address}",
            # a request that waited on memcached would take this long: far above any
            # request time a loaded machine makes
            "FH_PREFORK_MEMCACHE_TIMEOUT": "1.5"})
        wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="v1")
        baseline = request_latencies(cluster, 40)
        proxy.blackhole = True
        wait_for(lambda: all(s["store"]["healthy"] is False
                             for s in cluster.statuses().values()), 20, what="store unhealthy")
        edge.push_feature(make_feature("FLAG", False, 2))
        wait_for(lambda: set(versions(cluster).values()) == {2}, 10, what="Edge still applied")
        hung = request_latencies(cluster, 40)
        statuses = cluster.statuses()
        assert all(s["threads"] <= 3 for s in statuses.values()), "threads piled up"
        print(f"request p max: healthy {max(baseline)*1000:.1f} ms, "
              f"memcached hung {max(hung)*1000:.1f} ms")
        assert max(hung) < 1.0, "a request waited on memcached"
        proxy.blackhole = False
        held = wait_for(lambda: (h := stored(own_memcached.port, prefix)) and
                        h.get("FLAG") == 2 and h, 10, what="store to catch up")
        assert held["FLAG"] == 2
        wait_converged(edge, cluster, store, SETTLE, "every feature once memcached answers")


def test_slow_memcached_still_works_and_requests_do_not_wait(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str) -> None:
    edge.set_features(many_features(8))
    store = memcached_reader(own_memcached.address, prefix)
    # every memcached call takes half a second: a request that touched the store would show it
    with FaultyProxy(own_memcached.port, delay=0.5) as proxy:
        cluster = start_cluster("gunicorn", 4, env={
            "FH_PREFORK_STORE": f"memcache://{proxy.address}",
            "FH_PREFORK_MEMCACHE_TIMEOUT": "3"})
        wait_for(lambda: set(versions(cluster).values()) == {1}, 20, what="v1")
        edge.push_feature(make_feature("FLAG", False, 2), edge.streams()[0].id)
        wait_for(lambda: set(versions(cluster).values()) == {2}, 30,
                 what="one-stream update through a slow store")
        latencies = request_latencies(cluster, 40)
        assert max(latencies) < 0.5
        assert all(s["store"]["healthy"] for s in cluster.statuses().values())
        wait_converged(edge, cluster, store, 3 * SETTLE, "every feature through a slow store")


@pytest.mark.parametrize("how", ["refused", "never-answers"])
def test_memcached_unreachable_at_start_worker_serves_from_edge(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str, how: str) -> None:
    edge.set_features(many_features(8))
    # the same start against a healthy memcached, in this run: the machine's own pace
    started = time.monotonic()
    healthy = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": own_memcached.url})
    baseline = time.monotonic() - started
    healthy.stop()
    with FaultyProxy(own_memcached.port) as proxy:
        proxy.blackhole = True
        refused_port = free_port()
        address = f"127.0.0.1:{refused_port}" if how == "refused" else proxy.address
        started = time.monotonic()
        cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": f"memcache://{address}"})
        took = time.monotonic() - started
        print(f"4 workers up in {took:.2f} s with memcached {how} ({baseline:.2f} s healthy)")
        assert took < baseline + 3  # a worker waits at most its 3 s start budget on the store
        wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags from Edge")
        statuses: dict[int, Any] = cluster.statuses()
        assert all(s["store"]["healthy"] is False for s in statuses.values())
        assert all(s["edge_state"] == "connected" for s in statuses.values())
        json.dumps(statuses)
        # the fault clears: memcached appears on the refused port, or the proxy answers
        late = Memcached(port=refused_port, item_size="8m") if how == "refused" else None
        try:
            if late is not None:
                late.start()
            else:
                proxy.blackhole = False
            store = memcached_reader(late.address if late is not None
                                     else own_memcached.address, prefix)
            wait_converged(edge, cluster, store, SETTLE,
                           f"every feature in the store once memcached is {how} no more")
        finally:
            if late is not None:
                late.stop()


def test_memcached_restart_during_an_update_costs_what_idling_costs(
        start_cluster: StartCluster, own_memcached: Memcached, edge: EdgeSimulator,
        prefix: str) -> None:
    """memcached crashes and a supervisor restarts it on its port while Edge sends an update.

    A worker whose write failed retries a little later; if its refresh tick wrote the update
    first (memcached back by then), the retry used to stay scheduled in the past and the store
    thread waited ``Condition.wait(0)`` in a loop: a whole core until the next update. Each
    restart gives every worker about one chance in four of that order, so up to four rounds
    are run (stopping at the first worker seen burning CPU), then the cost is measured.
    """
    edge.set_features(many_features(8))
    store = memcached_reader(own_memcached.address, prefix)
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_STORE": own_memcached.url})
    assert edge.wait_for_streams(4, 10)
    wait_converged(edge, cluster, store, 10, "initial state")
    with measure_cost(cluster) as idle:
        hold_for(4)
    print(f"idle: {idle.summary()}")
    for version in range(2, 6):
        own_memcached.stop()
        edge.push_feature(make_feature("FLAG", version % 2 == 0, version))
        wait_for(lambda: all(s["store"]["healthy"] is False
                             for s in cluster.statuses().values()), BOUND * 2,
                 what="every worker to fail a write")
        own_memcached.start()
        wait_for(lambda: all(s["store"]["healthy"] for s in cluster.statuses().values()),
                 BOUND * 2, what="every worker to reach memcached again")
        with measure_cost(cluster, clients=1) as probe:
            hold_for(1.5)
        if probe.cpu_rate() > 0.5:
            break    # a worker burns a core: measure it
    with measure_cost(cluster) as cost:
        hold_for(12)
    assert_cost(cost, idle)

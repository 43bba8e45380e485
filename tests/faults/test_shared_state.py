"""The shared state never loses, resurrects or rolls back a feature, whatever the store does.

Each test runs real gunicorn workers against the local Edge and checks the
whole state (every feature, every worker, the store) against Edge's, through
``wait_converged``: a loss of any feature, not only the one a test updated,
fails it with a description of who holds what.

* an empty store (flushed, restarted, data key evicted, file deleted) followed
  by one ordinary update: absence is not deletion;
* a delete that waited while memcached was down;
* one node of three stopped and resumed with its old data: no rollback;
* a deleted feature re-sent by a lagging stream, or after an eviction: stays deleted;
* a stored entry the SDK cannot evaluate: workers boot and answer;
* leader mode with a state over memcached's item limit: followers fall back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.memcached import Memcached
from tests.support.procs import hold_for, wait_for
from tests.support.redis import Redis
from tests.support.servers import fh_log_lines
from tests.support.state import (
    State,
    StoreReader,
    data_key,
    decode_state,
    describe,
    edge_state,
    file_reader,
    many_features,
    memcached_reader,
    redis_reader,
    short,
    short_verify_env,
    verify_period,
    wait_converged,
    worker_states,
)

StartCluster = Callable[..., Cluster]
WORKERS = 4
REFRESH = 0.4
TTL = 3.0
SLACK = 3.0
#: "a refresh period or two": two periods at the top of their jitter, plus a loaded 2-core box
BOUND = 2 * REFRESH * 1.2 + SLACK
#: leader mode may have to elect again (the lease went with the data): ttl, a refresh, slack
LEADER_BOUND = math.ceil(TTL) + 2 * REFRESH * 1.2 + SLACK
#: Edge-absence grace and verify reads short enough that a state is checked past both:
#: one that agrees for a moment and is then judged away by a worker is no convergence
ABSENCE, VERIFY_EVERY = 1.0, 3
FAST = {"FH_PREFORK_REFRESH_SECONDS": str(REFRESH),
        "FH_PREFORK_EDGE_ABSENCE_SECONDS": str(ABSENCE),
        "FH_PREFORK_VERIFY_EVERY": str(VERIFY_EVERY)}
STAY = ABSENCE + VERIFY_EVERY * REFRESH * 1.2 + 0.5
LEADER = {"FH_PREFORK_EDGE_MODE": "leader", "FH_PREFORK_LEASE_SECONDS": str(TTL)}


def mc_client(server: Memcached) -> Client:
    return Client(("127.0.0.1", server.port), connect_timeout=1, timeout=2)


def held_keys(states: dict[int, State]) -> dict[int, set[str]]:
    return {pid: set(state) for pid, state in states.items()}


def one_stream(edge: EdgeSimulator) -> int:
    """The id of an open stream (in leader mode: the leader's, the only one)."""
    streams = wait_for(edge.streams, 10, what="an open Edge stream")
    return streams[0].id


def forget_without_broadcast(edge: EdgeSimulator, key: str) -> None:
    """Remove ``key`` from the simulator's environment without telling any stream.

    ``push_feature`` upserts the simulator's own state; after replaying a stale
    event to one lagging stream, Edge's truth must still be "deleted". The
    simulator has no silent delete, so reach into its state under its lock.
    """
    with edge._cond:
        edge._features.pop(key, None)
        edge._cond.notify_all()


def add_worker(cluster: Cluster) -> int:
    """gunicorn TTIN: one more worker; its pid once it answers."""
    before = set(cluster.worker_pids())
    cluster.send(signal.SIGTTIN)
    new = wait_for(lambda: set(cluster.worker_pids()) - before, 20, what="a new worker")
    pid = int(next(iter(new)))
    cluster.sample("/state", 25, pids=[pid])  # bounded: raises if it never answers
    return pid


# -- a. an empty store, then one ordinary update ---------------------------------------------

EMPTYING = ["flush_all", "restart", "evict_data_key", "file_deleted",
            "redis_flushall", "redis_restart", "redis_evict_data_key"]


def empty_the_store(how: str, server: Memcached | Redis | None, folder: Path,
                    prefix: str) -> None:
    if how == "file_deleted":
        (folder / f"{data_key(prefix)}.json").unlink()
        return
    if isinstance(server, Redis):  # FLUSHALL, a restart without persistence, an eviction
        if how == "redis_restart":
            server.restart()
            return
        import redis

        client = redis.Redis.from_url(server.url, socket_timeout=2)
        try:
            if how == "redis_flushall":
                assert client.flushall()
            else:
                assert client.delete(data_key(prefix)) == 1
        finally:
            client.close()
        return
    assert server is not None
    if how == "flush_all":
        client = mc_client(server)
        try:
            assert client.flush_all(noreply=False)
        finally:
            client.close()
    elif how == "restart":
        server.restart()
    else:  # evict_data_key: memcached's LRU took the big key, not the small ones
        client = mc_client(server)
        try:
            assert client.delete(data_key(prefix), noreply=False)
        finally:
            client.close()


@pytest.mark.parametrize("mode", ["every", "leader"])
@pytest.mark.parametrize("how", EMPTYING)
def test_emptied_store_then_one_update_keeps_every_feature(
        start_cluster: StartCluster, edge: EdgeSimulator, request: pytest.FixtureRequest,
        prefix: str, tmp_path: Path, how: str, mode: str) -> None:
    edge.set_features(many_features(8))
    folder = tmp_path / "store"
    env = dict(FAST, **(LEADER if mode == "leader" else {}))
    server: Memcached | Redis | None = None
    if how == "file_deleted":
        env["FH_PREFORK_STORE"] = f"file://{folder}"
        store: StoreReader = file_reader(folder, prefix)
    elif how.startswith("redis_"):
        server = request.getfixturevalue("own_redis")
        env["FH_PREFORK_STORE"] = server.url
        store = redis_reader(server.url, prefix)
    else:
        server = request.getfixturevalue("own_memcached")
        env["FH_PREFORK_STORE"] = server.url
        store = memcached_reader(server.address, prefix)
    cluster = start_cluster("gunicorn", WORKERS, env=env)
    before = wait_converged(edge, cluster, store, 15, "initial state")
    one_stream(edge)

    empty_the_store(how, server, folder, prefix)
    # one ordinary update, to one stream: every other feature now exists only in memory
    edge.push_feature(make_feature("FLAG", False, 2), one_stream(edge))

    wait_converged(edge, cluster, store, LEADER_BOUND if mode == "leader" else BOUND,
                   f"{how} ({mode} mode), then one update to one stream",
                   never_lose=held_keys(before), stay=STAY)


# -- b. a delete that waited while memcached was down ----------------------------------------

@pytest.mark.parametrize("server_kind", ["memcache", "redis"])
def test_delete_pending_while_memcached_was_down_deletes_only_that_feature(
        start_cluster: StartCluster, edge: EdgeSimulator, request: pytest.FixtureRequest,
        prefix: str, server_kind: str) -> None:
    features = many_features(8)
    edge.set_features(features)
    own_memcached: Memcached | Redis
    if server_kind == "redis":
        own_memcached = request.getfixturevalue("own_redis")
        store = redis_reader(own_memcached.url, prefix)
    else:
        own_memcached = request.getfixturevalue("own_memcached")
        store = memcached_reader(own_memcached.address, prefix)
    cluster = start_cluster("gunicorn", WORKERS, env={**FAST,
                                                      "FH_PREFORK_STORE": own_memcached.url})
    before = wait_converged(edge, cluster, store, 15, "initial state")

    own_memcached.stop()
    gone = features[3]
    edge.delete_feature(gone)  # every stream: every worker drops it and queues the delete
    wait_for(lambda: all(gone["key"] not in s and len(s) == len(features) - 1
                         for s in worker_states(cluster).values()), 10,
             what=f"{gone['key']} deleted in every worker's memory")
    hold_for(2 * REFRESH * 1.2)  # a few failed write attempts: the delete is pending
    own_memcached.start()  # empty

    states = wait_converged(edge, cluster, store, BOUND,
                            f"memcached back empty with the delete of {gone['key']} pending",
                            never_lose=held_keys(before), stay=STAY)
    assert all(gone["key"] not in s for s in states.values())


# -- c. one of three memcached nodes stopped, then resumed with its old data -----------------

def test_stopped_node_of_three_comes_back_without_rollback_or_deletion(
        start_cluster: StartCluster, edge: EdgeSimulator, prefix: str) -> None:
    from fh_prefork.store.memcache import make_client, parse_servers
    from fh_prefork.store.options import MemcacheSessionStoreOptions

    nodes = [Memcached(item_size="8m") for _ in range(3)]
    try:
        for node in nodes:
            node.start()
        addresses = ",".join(n.address for n in nodes)
        store = memcached_reader(addresses, prefix)  # a fresh client: every node in rotation
        features = many_features(8)
        edge.set_features(features)
        cluster = start_cluster("gunicorn", WORKERS, env={
            **FAST, **short_verify_env(), "FH_PREFORK_STORE": f"memcache://{addresses}"})
        before = wait_converged(edge, cluster, store, 15, "initial state on three nodes")

        def holds_data(node: Memcached) -> bool:
            client = mc_client(node)
            try:
                return client.get(data_key(prefix)) is not None
            finally:
                client.close()

        holders = [n for n in nodes if holds_data(n)]
        assert len(holders) == 1, f"data key on {len(holders)} nodes"
        stopped = holders[0]
        assert stopped.proc is not None
        pid = stopped.proc.pid

        # the store as a worker's client sees it: one long-lived client, same settings
        view = make_client(parse_servers(addresses), MemcacheSessionStoreOptions())

        def seen_by_workers() -> State | None:
            try:
                return decode_state(view.get(data_key(prefix)))
            except Exception:
                return None

        created = make_feature("CREATED", True, 1)
        updated = make_feature("OTHER", True, 2)
        os.kill(pid, signal.SIGSTOP)
        try:
            edge.push_feature(created)
            edge.push_feature(updated)
            during = wait_converged(edge, cluster, lambda: edge_state(edge), 10,
                                    "the new and updated features in every worker",
                                    never_lose=held_keys(before))
            wait_for(lambda: (s := seen_by_workers()) is not None
                     and s.get("CREATED") == (created["id"], 1)
                     and s.get("OTHER") == (updated["id"], 2), 20, interval=0.2,
                     what="the store, as the workers' clients see it, to hold both")
            wait_converged(edge, cluster, lambda: edge_state(edge), 10,
                           "workers while the node is stopped", never_lose=held_keys(during))
        finally:
            os.kill(pid, signal.SIGCONT)
            view.close()

        # the node answers again with its old value; clients put it back in rotation
        # after their dead timeout (5 s), and a verify period later everyone has read it
        settle = 5.0 + verify_period(REFRESH) + 2 * REFRESH * 1.2
        end = time.monotonic() + settle
        while time.monotonic() < end:  # nobody may drop a feature in the meantime
            wait_converged(edge, cluster, lambda: edge_state(edge), 10,
                           "workers while the stale node returns", never_lose=held_keys(during))
            hold_for(0.5)
        wait_converged(edge, cluster, store, BOUND,
                       "a verify period after the stale node came back",
                       never_lose=held_keys(during))

        new = add_worker(cluster)
        wait_converged(edge, cluster, store, BOUND, f"new worker {new} and the rest",
                       workers=WORKERS + 1, stay=STAY)
    finally:
        for node in nodes:  # stopped by pid; a SIGSTOPped one was SIGCONTed above
            node.stop()


# -- d. a deleted feature does not come back -------------------------------------------------

@pytest.mark.parametrize("how", ["lagging_stream", "evicted_then_update"])
def test_deleted_feature_does_not_come_back(
        start_cluster: StartCluster, edge: EdgeSimulator, own_memcached: Memcached,
        prefix: str, how: str) -> None:
    features = many_features(8)
    edge.set_features(features)
    store = memcached_reader(own_memcached.address, prefix)
    cluster = start_cluster("gunicorn", WORKERS, env={**FAST,
                                                      "FH_PREFORK_STORE": own_memcached.url})
    wait_converged(edge, cluster, store, 15, "initial state")

    gone = dict(features[4])
    edge.delete_feature(gone)  # every stream
    before = wait_converged(edge, cluster, store, BOUND, f"{gone['key']} deleted everywhere")

    if how == "lagging_stream":
        # a stream that lags behind re-sends the state from before the delete
        edge.push_feature(gone, one_stream(edge))
        forget_without_broadcast(edge, gone["key"])   # Edge itself still says: deleted
    else:
        client = mc_client(own_memcached)
        try:
            assert client.delete(data_key(prefix), noreply=False)
        finally:
            client.close()
        edge.push_feature(make_feature("FLAG", False, 2), one_stream(edge))
    assert gone["key"] not in edge_state(edge)

    hold_for(2 * REFRESH * 1.2)  # let a resurrection, if any, spread through the store
    wait_converged(edge, cluster, store, BOUND, f"{how}: {gone['key']} still deleted",
                   never_lose=held_keys(before))

    new = add_worker(cluster)
    states = wait_converged(edge, cluster, store, BOUND, f"{how}: new worker {new}",
                            workers=WORKERS + 1, stay=STAY)
    assert gone["key"] not in states[new]


# -- e. one malformed stored entry -----------------------------------------------------------

def bad_entries() -> list[dict[str, Any]]:
    """Valid id, key and version; contents the SDK cannot evaluate."""
    strategies_not_a_list = {**make_feature("BAD_STRATEGIES", True, 3), "strategies": 5}
    unknown_conditional = {**make_feature("BAD_CONDITIONAL", True, 3), "strategies": [{
        "id": "s1", "name": "from the future", "percentage": 0, "value": False,
        "attributes": [{"id": "a1", "conditional": "TELEPATHY", "fieldName": "now",
                        "type": "DATE", "values": ["2020-01-01"]}]}]}
    return [strategies_not_a_list, unknown_conditional]


def fingerprint(features: list[dict[str, Any]]) -> str:
    """The cross-SDK fingerprint: SHA-256 of id:version sorted by id, joined by |."""
    pairs = sorted((str(f["id"]), f["version"]) for f in features)
    return hashlib.sha256("|".join(f"{i}:{v}" for i, v in pairs).encode()).hexdigest()


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@pytest.mark.parametrize("entries", ["both", "unknown_conditional_only"])
def test_malformed_stored_entry_does_not_stop_boot_or_requests(
        start_cluster: StartCluster, edge: EdgeSimulator, own_memcached: Memcached,
        prefix: str, entries: str) -> None:
    features = many_features(8)
    edge.set_features(features)
    bad = bad_entries() if entries == "both" else bad_entries()[1:]
    stored = features + bad
    client = mc_client(own_memcached)
    try:
        client.set(data_key(prefix), json.dumps(stored).encode(), noreply=False)
        client.set(f"{data_key(prefix)}_sha", fingerprint(stored).encode(), noreply=False)
    finally:
        client.close()

    failure: str | None = None
    try:
        cluster = start_cluster("gunicorn", WORKERS, env={
            **FAST, "FH_PREFORK_STORE": own_memcached.url})
    except (RuntimeError, TimeoutError) as err:
        lines = str(err).splitlines()
        raised = [line.strip() for line in lines if line.strip().endswith(("Error", "error"))
                  or "Error:" in line]
        failure = (f"gunicorn did not start with {len(bad)} malformed stored entr(ies): "
                   f"{raised[-1] if raised else lines[0]}"
                   f"{' (Worker failed to boot)' if 'Worker failed to boot' in str(err) else ''}")
    if failure is not None:
        pytest.fail(failure)
    assert "Worker failed to boot" not in cluster.log_text()

    query = "/flags?" + "&".join(f"key={f['key']}" for f in [*bad, features[0], features[2]])
    codes = [http_status(cluster.url + query) for _ in range(5 * WORKERS)]
    assert set(codes) == {200}, f"answers to {query}: {codes}"

    expected = edge_state(edge)
    store = memcached_reader(own_memcached.address, prefix)

    def good_served() -> str | None:
        """None once every worker and the store hold Edge's features; else what differs
        (the malformed entries themselves may be kept or dropped)."""
        workers = {pid: {k: v for k, v in s.items() if k in expected}
                   for pid, s in worker_states(cluster).items()}
        held = store()
        held = {k: v for k, v in held.items() if k in expected} if held is not None else None
        ok = len(workers) >= WORKERS and all(w == expected for w in workers.values()) \
            and held == expected
        return None if ok else short(describe(expected, workers, held))

    last: list[str | None] = [None]

    def settled() -> bool:
        last[0] = good_served()
        return last[0] is None

    try:
        wait_for(settled, BOUND + 5, interval=0.2, what="the good features everywhere")
    except AssertionError as err:
        raise AssertionError(f"{err}:\n{last[0]}") from None

    pids = cluster.worker_pids()
    warned = len(fh_log_lines(cluster))
    hold_for(10 * REFRESH * 1.2)  # ten refresh ticks per worker
    later = fh_log_lines(cluster)
    assert cluster.worker_pids() == pids, "a worker died"
    assert "Worker failed to boot" not in cluster.log_text()
    assert len(later) - warned <= WORKERS, \
        f"{len(later) - warned} warnings in 10 ticks (one per tick?):\n" + "\n".join(later[-12:])
    assert len(later) <= 4 * WORKERS, "\n".join(later[-20:])
    codes = [http_status(cluster.url + query) for _ in range(2 * WORKERS)]
    assert set(codes) == {200}, f"answers to {query} after 10 ticks: {codes}"


# -- f. leader mode, a state over memcached's item limit -------------------------------------

def test_leader_mode_state_over_item_limit_followers_fall_back_to_edge(
        start_cluster: StartCluster, edge: EdgeSimulator, prefix: str) -> None:
    features = [make_feature(f"FEATURE_{i:05d}", i % 2 == 0, 1 + i % 5) for i in range(10_000)]
    size = len(json.dumps(features, separators=(",", ":")).encode())
    assert size > 1024 * 1024, size  # over memcached's default item size
    edge.set_features(features)
    with Memcached() as small:  # default item size: 1 MB
        assert small.item_size == "1m"
        cluster = start_cluster("gunicorn", WORKERS, env={
            **FAST, **LEADER, "FH_PREFORK_STORE": small.url})
        expected = edge_state(edge)
        last: list[str] = ["no answer yet"]

        def all_served() -> bool:
            states = worker_states(cluster)
            if len(states) >= WORKERS and all(s == expected for s in states.values()):
                return True
            last[0] = "; ".join(
                f"worker {pid} holds {len(s)} ({sum(k in s for k in expected)} of Edge's)"
                for pid, s in sorted(states.items()))
            return False

        try:
            wait_for(all_served, LEADER_BOUND + 6 * REFRESH * 1.2 + 5, interval=0.5,
                     what=f"all 10,000 features ({size} bytes) in every worker")
        except AssertionError as err:
            roles = {pid: s["role"] for pid, s in cluster.statuses().items()}
            raise AssertionError(f"{err}; roles {roles}:\n{last[0]}") from None

        statuses = cluster.statuses()
        roles = {pid: s["role"] for pid, s in statuses.items()}
        assert sum(r == "leader" for r in roles.values()) <= 1, roles
        fallback = {pid: s for pid, s in statuses.items() if s["role"] != "leader"}
        assert len(fallback) >= WORKERS - 1, roles
        for pid, s in fallback.items():
            assert s["role"] == "fallback", roles
            reason = (s.get("election") or {}).get("fallback_reason")
            assert isinstance(reason, str) and reason, (pid, s.get("election"))
            assert "store" in reason.lower(), (pid, reason)
            problem = (s.get("store") or {}).get("state_problem")
            assert isinstance(problem, str) and problem, (pid, s.get("store"))
        print(f"{size} bytes of state: {len(fallback)} followers fell back; reason: "
              f"{next(iter(fallback.values()))['election']['fallback_reason']}")
        assert json.dumps(statuses)  # status stays JSON


def test_leader_mode_state_growing_over_item_limit_followers_fall_back_to_edge(
        start_cluster: StartCluster, edge: EdgeSimulator, prefix: str) -> None:
    """The store keeps the older state that fitted; only the leader knows the newer one does
    not. Before: followers served the older state for as long as that lasted, silently."""
    small_state = many_features(8)
    edge.set_features(small_state)
    with Memcached() as small:  # default item size: 1 MB
        cluster = start_cluster("gunicorn", WORKERS, env={
            **FAST, **LEADER, "FH_PREFORK_STORE": small.url})
        wait_for(lambda: (st := worker_states(cluster)) and len(st) >= WORKERS
                 and all(s == edge_state(edge) for s in st.values()), LEADER_BOUND,
                 interval=0.5, what="the small state in every worker")
        grown = [*small_state, *(make_feature(f"FEATURE_{i:05d}", i % 2 == 0, 1)
                                 for i in range(10_000))]
        size = len(json.dumps(grown, separators=(",", ":")).encode())
        assert size > 1024 * 1024, size
        edge.set_features(grown)
        expected = edge_state(edge)
        wait_for(lambda: (st := worker_states(cluster)) and len(st) >= WORKERS
                 and all(s == expected for s in st.values()),
                 LEADER_BOUND + 6 * REFRESH * 1.2 + 5, interval=0.5,
                 what=f"all {len(grown)} features ({size} bytes) in every worker")
        statuses = cluster.statuses()
        reasons = {pid: (s.get("election") or {}).get("fallback_reason")
                   for pid, s in statuses.items() if s["role"] != "leader"}
        assert len(reasons) >= WORKERS - 1, reasons
        # the leader's lease says it first; a follower that then fetched the grown state
        # and failed to write it too says its own
        assert all(r and "item limit" in r for r in reasons.values()), reasons
        print(f"state grew to {size} bytes: {len(reasons)} followers fell back; reason: "
              f"{next(iter(reasons.values()))}")

"""Edge's state wins over every inference, with real gunicorn workers and memcached.

The real Edge's faults that our own inferences turned into fleet-wide deletions
(issue 19): an Edge serving an empty or a short list for longer than the absence
grace, and one replica of two lagging behind the other. Each test samples every
worker and the store all along and counts the samples in which a flag Edge
still has was missing somewhere: "during a bad list no live flag is removed" is
measured, not assumed. At the end the whole state (every worker and the store)
must equal Edge's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.servers import cluster_starter
from tests.support.state import State, edge_state, worker_states

from .whole_state import StoreReader, many_features, memcached_reader, short, wait_converged

pytestmark = pytest.mark.servers

REFRESH = 0.4
GRACE = 1.5
#: refresh, absence grace and verify reads short enough that a wrong judgment would show
FAST = {"FH_PREFORK_REFRESH_SECONDS": str(REFRESH),
        "FH_PREFORK_EDGE_ABSENCE_SECONDS": str(GRACE),
        "FH_PREFORK_VERIFY_EVERY": "3"}
BOUND = 15.0


def missing_samples(truth: State, clusters: list[Cluster], store: StoreReader,
                    seconds: float, each: Callable[[], None] | None = None
                    ) -> tuple[int, list[str]]:
    """Sample every worker and the store for ``seconds``; (samples, what was missing when).

    ``each`` runs before every sample (e.g. Edge sending its bad list again, as a
    reconnecting stream would get it).
    """
    deadline = time.monotonic() + seconds
    samples, wrong = 0, []
    while time.monotonic() < deadline:
        if each is not None:
            each()
        states: dict[int, State] = {}
        for cluster in clusters:
            states.update(worker_states(cluster, timeout=10))
        held = store()
        samples += 1
        for pid, state in states.items():
            gone = sorted(k for k in truth if k not in state)
            if gone:
                wrong.append(f"{time.monotonic():.1f} worker {pid} lacks {gone}")
        if held is None or any(k not in held for k in truth):
            wrong.append(f"{time.monotonic():.1f} the store lacks "
                         f"{sorted(k for k in truth if held is None or k not in held)}")
        time.sleep(0.2)
    return samples, wrong


@pytest.fixture
def two_replicas(server_env: dict[str, str], tmp_path: Path
                 ) -> Iterator[tuple[EdgeSimulator, EdgeSimulator, Callable[..., Cluster],
                                     Callable[..., Cluster]]]:
    """Two Edge replicas of one environment, and a cluster starter on each (one memcached)."""
    with EdgeSimulator(keepalive_interval=1.0) as a, EdgeSimulator(keepalive_interval=1.0) as b:
        for replica in (a, b):
            replica.set_features(many_features())
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        with cluster_starter({**server_env, "FEATUREHUB_EDGE_URL": a.url},
                             tmp_path / "a") as start_a, \
                cluster_starter({**server_env, "FEATUREHUB_EDGE_URL": b.url},
                                tmp_path / "b") as start_b:
            yield a, b, start_a, start_b


def test_a_lagging_replica_removes_no_flag_another_live_replica_lists(
        two_replicas: tuple[EdgeSimulator, EdgeSimulator, Callable[..., Cluster],
                            Callable[..., Cluster]],
        memcached: Any, prefix: str) -> None:
    """Two hosts on one memcached, each on its own Edge replica. Replica B lacks a new
    flag for four graces while B's streams keep getting full lists without it: the flag
    must never leave a worker of either host, nor the store (today's main tombstoned it
    fleet-wide after the grace and kept it deleted after B caught up)."""
    replica_a, replica_b, start_a, start_b = two_replicas
    host_a = start_a("gunicorn", 2, env=FAST)
    host_b = start_b("gunicorn", 2, env=FAST)
    store = memcached_reader(memcached.address, prefix)
    wait_converged(replica_a, [host_a, host_b], store, BOUND, "both hosts at start")

    new = make_feature("NEW", True, 1)
    replica_a.push_feature(new)                      # B's replica lags: it never heard
    truth = edge_state(replica_a)
    wait_converged(replica_a, [host_a, host_b], store, BOUND, "NEW everywhere (B's through "
                   "the store)")
    lagging = [f for f in replica_b.features()]
    samples, wrong = missing_samples(truth, [host_a, host_b], store, 4 * GRACE + 3 * REFRESH,
                                     each=lambda: replica_b.set_features(lagging))
    print(f"\nlagging replica: {samples} samples over {4 * GRACE + 3 * REFRESH:.1f} s, "
          f"{len(wrong)} with NEW missing somewhere")
    assert samples >= 5
    assert not wrong, "a flag replica A lists left the fleet:\n" + "\n".join(wrong[:10])

    replica_b.push_feature(new)                       # B catches up: nothing changes
    wait_converged(replica_a, [host_a, host_b], store, BOUND, "after B caught up",
                   stay=GRACE + 3 * REFRESH)


def test_an_empty_edge_list_for_longer_than_the_grace_removes_nothing(
        edge: EdgeSimulator, start_cluster: Callable[..., Cluster], memcached: Any,
        prefix: str) -> None:
    """An Edge restarting with an empty cache serves an empty list to every stream, for
    four graces: every flag stays served by every worker and held by the store; then Edge
    recovers at the same ids and versions and nothing was refused."""
    edge.set_features(many_features())
    cluster = start_cluster("gunicorn", 3, env=FAST)
    store = memcached_reader(memcached.address, prefix)
    wait_converged(edge, cluster, store, BOUND, "at start")
    truth = edge_state(edge)
    full = edge.features()
    samples, wrong = missing_samples(truth, [cluster], store, 4 * GRACE,
                                     each=lambda: edge.set_features([]))
    print(f"\nempty list: {samples} samples over {4 * GRACE:.1f} s, {len(wrong)} with a flag "
          f"missing somewhere")
    assert samples >= 5
    assert not wrong, "an empty Edge list removed flags:\n" + "\n".join(wrong[:10])
    edge.set_features(full)
    wait_converged(edge, cluster, store, BOUND, "after Edge recovered", stay=GRACE)


def test_a_short_edge_list_removes_flags_only_until_edge_names_them_again(
        edge: EdgeSimulator, start_cluster: Callable[..., Cluster], memcached: Any,
        prefix: str) -> None:
    """Edge serves a list lacking two of eight flags for much longer than the grace (a
    replica that lost part of its cache; indistinguishable from a delete no stream heard):
    they are removed everywhere in the end; when Edge lists them again at the very same ids
    and versions they are back in every worker and the store within a refresh or two
    (today's main tombstoned them at their own version for 7 days)."""
    features = many_features()
    edge.set_features(features)
    cluster = start_cluster("gunicorn", 3, env=FAST)
    store = memcached_reader(memcached.address, prefix)
    wait_converged(edge, cluster, store, BOUND, "at start")
    short_list = [f for f in features if f["key"] not in ("F03", "F04")]
    edge.set_features(short_list)
    wait_converged(edge, cluster, store, BOUND + GRACE, "the short list judged after the grace")
    started = time.monotonic()
    edge.set_features(features)
    wait_converged(edge, cluster, store, BOUND, "back at the same versions")
    print(f"\nshort list recovered in {time.monotonic() - started:.1f} s")
    states = wait_converged(edge, cluster, store, BOUND, "back for good", stay=GRACE + REFRESH)
    assert all(states[pid]["F03"] == (f["id"], f["version"])
               for pid in states for f in features if f["key"] == "F03"), short(str(states))

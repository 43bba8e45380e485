"""Edge down, flapping, failing, deleted or dropping streams: bounded retries, right flags after.

"Right flags" is the whole state: after each fault every worker serves every
one of Edge's features, and the store holds them (``wait_converged``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.procs import wait_for
from tests.support.servers import all_at, fh_log_lines, versions
from tests.support.state import StoreReader, many_features, memcached_reader, wait_converged

StartCluster = Callable[..., Cluster]
WORKERS = 4
BOUND = 2 * REFRESH * 1.2 + 3.0
#: time for the whole state to settle once the fault cleared (a reconnect, a refresh or two)
SETTLE = BOUND + 5


@pytest.fixture
def store(edge: EdgeSimulator, memcached: object, prefix: str) -> StoreReader:
    """Eight features on Edge before the workers start; the store the workers share."""
    edge.set_features(many_features(8))
    return memcached_reader(memcached.address, prefix)  # type: ignore[attr-defined]


def cut_streams(edge: EdgeSimulator) -> None:
    """Drop every open stream and listen again: workers reconnect under the new conditions."""
    edge.go_down()
    edge.come_up()


def attempts_per_worker_second(edge: EdgeSimulator, since: int, started: float) -> float:
    return (edge.total_stream_requests - since) / WORKERS / (time.monotonic() - started)


@pytest.mark.parametrize("transport", ["sse", "poll"])
def test_edge_flapping_ends_with_correct_flags_and_bounded_retries(
        start_cluster: StartCluster, edge: EdgeSimulator, store: StoreReader,
        transport: str) -> None:
    cluster = start_cluster("gunicorn", WORKERS, env={
        "FH_PREFORK_EDGE": transport, "FEATUREHUB_POLL_INTERVAL": "1"})
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="v1")
    requests_before, started = edge.total_stream_requests + edge.total_poll_requests, \
        time.monotonic()
    for version in range(2, 6):
        edge.go_down()
        edge.push_feature(make_feature("FLAG", version % 2 == 0, version))
        wait_for(lambda: all(s["edge_state"] != "connected" or transport == "poll"
                             for s in cluster.statuses().values()), 10, what="workers to notice")
        edge.come_up()
        wait_for(all_at(cluster, version), 10, what=f"v{version} after Edge came back")
    elapsed = time.monotonic() - started
    requests = edge.total_stream_requests + edge.total_poll_requests - requests_before
    rate = requests / WORKERS / elapsed
    print(f"{transport}: 4 flaps in {elapsed:.1f} s, {rate:.2f} Edge requests/worker/s")
    assert rate <= 2.0  # about one attempt per second per worker (polls every 1 s)
    wait_converged(edge, cluster, store, SETTLE, f"{transport}: every feature after the flaps")


def test_edge_answering_500_backs_off_then_recovers(
        start_cluster: StartCluster, edge: EdgeSimulator, store: StoreReader) -> None:
    cluster = start_cluster("gunicorn", WORKERS)
    assert edge.wait_for_streams(WORKERS, 10)
    edge.set_failure(500)
    cut_streams(edge)  # every reconnect now gets a 500
    since, started = edge.total_stream_requests, time.monotonic()
    wait_for(lambda: all(s["edge"]["failures"] >= 2 for s in cluster.statuses().values()), 15,
             what="repeated failures")
    rate = attempts_per_worker_second(edge, since, started)
    assert rate <= 1.5, f"{rate:.2f} attempts per worker per second"
    assert set(versions(cluster).values()) == {1}, "last known flags still served"
    edge.push_feature(make_feature("FLAG", False, 3))
    edge.set_failure(None)
    wait_for(lambda: set(versions(cluster).values()) == {3}, 10, what="recovery")
    lines = [line for line in fh_log_lines(cluster) if "HTTP 500" in line]  # not a port
    assert len(lines) <= 2 * WORKERS, lines
    wait_converged(edge, cluster, store, SETTLE, "every feature after the 500s")


def test_key_deleted_404_is_reported_in_status_and_log(
        start_cluster: StartCluster, edge: EdgeSimulator, store: StoreReader) -> None:
    cluster = start_cluster("gunicorn", WORKERS)
    assert edge.wait_for_streams(WORKERS, 10)
    edge.set_failure(404)
    cut_streams(edge)
    statuses = wait_for(lambda: (st := cluster.statuses()) and all(
        s["edge_state"] == "key_not_found" for s in st.values()) and st, 15,
        what="key_not_found in every worker")
    assert all("404" in (s["edge"]["last_error"] or "") for s in statuses.values()), statuses
    # the last known state, all of it, is still served and still stored
    wait_converged(edge, cluster, store, SETTLE, "every feature while Edge answers 404")
    not_found = [line for line in fh_log_lines(cluster) if "Edge answered 404" in line]
    assert 1 <= len(not_found) <= WORKERS, not_found


def test_edge_closing_streams_after_every_event(
        start_cluster: StartCluster, edge: EdgeSimulator, store: StoreReader) -> None:
    cluster = start_cluster("gunicorn", WORKERS)
    assert edge.wait_for_streams(WORKERS, 10)
    edge.close_after_each_event = True
    cut_streams(edge)
    since, started = edge.total_stream_requests, time.monotonic()
    for version in range(2, 5):
        edge.push_feature(make_feature("FLAG", True, version))
        wait_for(all_at(cluster, version), BOUND + 2, what=f"v{version}")
    wait_for(lambda: time.monotonic() - started > 3, 5, what="a 3 s window")
    rate = attempts_per_worker_second(edge, since, started)
    print(f"stream closed after every event: {rate:.2f} connections/worker/s")
    assert rate <= 1.5
    edge.close_after_each_event = False
    cut_streams(edge)
    wait_converged(edge, cluster, store, SETTLE, "every feature once streams stay open again")

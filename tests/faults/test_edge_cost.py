"""What an Edge fault costs while it lasts: real workers, measured as the store faults are.

Each case starts 4 gunicorn workers on memcached, measures them idling, then
measures one window in which Edge misbehaves the way the real Edge can
(``../shared/seed/edge-protocol.md``): it goes down (connections refused), it
is slow (accepts and answers nothing for the whole fault), it says the API key is unknown (200 +
``failure``, then close), it serves an empty list, or it is a poll-only Edge
(the stream answers 501). Workers back off; none may spin a core or stall its
requests, and the state must end whole once Edge is back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.servers.conftest import REFRESH
from tests.support.cost import assert_cost, measure_cost
from tests.support.procs import hold_for

from .whole_state import many_features, memcached_reader, wait_converged

pytestmark = pytest.mark.servers

StartCluster = Callable[..., Cluster]
FAULT_SECONDS = 6.0
AFTER_SECONDS = 4.0
SETTLE = 2 * REFRESH * 1.2 + 10.0


def _down(edge: EdgeSimulator) -> Iterator[None]:
    edge.go_down()
    try:
        yield
    finally:
        edge.come_up()


def _slow(edge: EdgeSimulator) -> Iterator[None]:
    edge.response_delay = FAULT_SECONDS   # accepts, then answers nothing for the whole fault
    edge.drop_streams()
    try:
        yield
    finally:
        edge.response_delay = 0.0
        edge.drop_streams()


def _unknown_key(edge: EdgeSimulator) -> Iterator[None]:
    edge.keys_unknown = True
    edge.drop_streams()
    try:
        yield
    finally:
        edge.keys_unknown = False


def _empty_list(edge: EdgeSimulator) -> Iterator[None]:
    edge.serve_empty(True)
    edge.drop_streams()
    try:
        yield
    finally:
        edge.serve_empty(False)
        edge.drop_streams()


def _poll_only(edge: EdgeSimulator) -> Iterator[None]:
    edge.poll_only = True
    edge.drop_streams()
    try:
        yield
    finally:
        edge.poll_only = False


FAULTS: dict[str, Callable[[EdgeSimulator], Iterator[None]]] = {
    "down": _down, "slow": _slow, "unknown_key": _unknown_key, "empty_list": _empty_list,
    "poll_only": _poll_only,
}


@pytest.mark.parametrize("how", sorted(FAULTS))
def test_an_edge_fault_costs_what_idling_costs(how: str, edge: EdgeSimulator,
                                               start_cluster: StartCluster, memcached: Any,
                                               prefix: str) -> None:
    fault: Callable[[], AbstractContextManager[None]] = contextmanager(
        lambda: FAULTS[how](edge))
    edge.set_features(many_features(8))
    store = memcached_reader(memcached.address, prefix)
    cluster = start_cluster("gunicorn", 4, env={"FH_PREFORK_EDGE_BACKOFF_MAX": "2",
                                                "FEATUREHUB_POLL_INTERVAL": "1"})
    wait_converged(edge, cluster, store, 15, "initial state")
    with measure_cost(cluster) as idle:
        hold_for(3)
    requests_before = edge.total_stream_requests + edge.total_poll_requests
    with measure_cost(cluster) as cost:
        with fault():
            hold_for(FAULT_SECONDS)
        edge.push_feature(make_feature("FLAG", False, 2))
        wait_converged(edge, cluster, store, SETTLE, "every feature once Edge was back")
        hold_for(AFTER_SECONDS)
    asked = edge.total_stream_requests + edge.total_poll_requests - requests_before
    print(f"\n{how}: idle: {idle.summary()}\n{how}: Edge requests in the window: {asked}")
    assert_cost(cost, idle)

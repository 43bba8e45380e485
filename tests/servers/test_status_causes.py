"""``fh-prefork status --server`` names why a worker disagrees with its store, and does not
call a worker different for a change the store took a moment ago."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fh_prefork.cli import EXIT_OK, format_server, inspect_server
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.memcached import Memcached
from tests.support.procs import free_port, wait_for
from tests.support.servers import versions

StartCluster = Callable[..., Cluster]


@pytest.fixture
def own_memcached() -> Iterator[Memcached]:
    """A memcached of this test's own: the test stops it."""
    server = Memcached()
    try:
        yield server
    finally:
        server.stop()


def _causes(cluster: Cluster, what: str, expected: str) -> dict[str, Any]:
    """The report once every worker's record shows ``expected`` as its cause (bounded)."""
    def report() -> dict[str, Any] | None:
        answer = inspect_server(cluster.master_pid, timeout=0.5, settle=0)
        causes = {w.get("cause") for w in answer["workers"]}
        return answer if len(answer["workers"]) == 2 and causes == {expected} else None

    found = wait_for(report, 20, interval=0.2, what=what)
    assert found is not None
    return found


def test_an_unreachable_store_is_named_not_reported_as_fingerprint_none(
        start_cluster: StartCluster, own_memcached: Memcached) -> None:
    cluster = start_cluster("gunicorn", 2, env={"FH_PREFORK_STORE": own_memcached.url})
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags everywhere")
    own_memcached.stop()
    report = _causes(cluster, "the store named unreachable", "store unreachable")
    assert report["exit_code"] != EXIT_OK
    text = format_server(report)
    assert "unknown: store unreachable" in text, text
    assert "fingerprint None" not in text and "the store None" not in text, text
    assert all("is unreachable or unreadable" in p for p in report["problems"]), text


def test_an_api_key_edge_does_not_know_is_named(start_cluster: StartCluster) -> None:
    with EdgeSimulator(["portfolio/another-env/client*secret"], keepalive_interval=1.0) as edge:
        cluster = start_cluster("gunicorn", 2, env={"FEATUREHUB_EDGE_URL": edge.url})
        report = _causes(cluster, "Edge's 404 named", "edge key not found")
    text = format_server(report)
    assert "DIFFERS: edge key not found" in text, text
    assert all("API key does not exist" in p for p in report["problems"]), text


def test_edge_down_with_an_empty_store_is_named(start_cluster: StartCluster) -> None:
    cluster = start_cluster("gunicorn", 2, env={
        "FEATUREHUB_EDGE_URL": f"http://127.0.0.1:{free_port()}/"})   # nobody listens
    report = _causes(cluster, "Edge down named", "edge down")
    text = format_server(report)
    assert "DIFFERS: edge down" in text, text
    assert all("Edge is down" in p and "nothing to serve" in p
               for p in report["problems"]), text


def _served(cluster: Cluster, version: int) -> None:
    wait_for(lambda: set(versions(cluster).values()) == {version}, 10, what="the flip served")


def test_a_store_that_just_changed_is_given_a_moment(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    """Records are rewritten once a second: asked right after a flip, a worker's record can
    predate it. The command re-checks once before calling the worker different."""
    cluster = start_cluster("gunicorn", 2)
    wait_for(lambda: inspect_server(cluster.master_pid, settle=0)["exit_code"] == EXIT_OK, 20,
             interval=0.2, what="every worker agrees before the flips")
    for version in (2, 3, 4):
        edge.push_feature(make_feature("FLAG", version % 2 == 0, version))
        _served(cluster, version)
        report = inspect_server(cluster.master_pid)
        assert report["exit_code"] == EXIT_OK, format_server(report)


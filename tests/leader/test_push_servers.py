"""Push under a real gunicorn in leader mode: the leader's update reaches every worker at once.

Six workers share one store (the embedded store, or Redis); one holds the Edge
stream. The refresh period is 5 s, so a worker serving the update within a
second or two was woken by the store's notification, not by its timer. The
precise figures come from ``fh-prefork bench --only push``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import wait_for
from tests.support.servers import all_at, versions

REFRESH = 5.0
BOUND = 2.0     # s: well under one refresh period, loose for a loaded machine


@pytest.mark.parametrize("backend", ["file", "redis"])
def test_leader_update_reaches_every_worker_before_any_refresh(
        backend: str, start_cluster: Callable[..., Cluster],
        edge: EdgeSimulator, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    url = (request.getfixturevalue("redis_server").url if backend == "redis"
           else f"file://{tmp_path}/store")
    cluster = start_cluster("gunicorn", 6, env={
        "FH_PREFORK_STORE": url, "FH_PREFORK_EDGE_MODE": "leader",
        "FH_PREFORK_REFRESH_SECONDS": str(REFRESH)})
    wait_for(lambda: len(edge.streams()) == 1, 20, what="one leader's stream")
    wait_for(lambda: set(versions(cluster).values()) == {1}, 15, what="every worker at v1")
    took = []
    for version in (2, 3, 4):
        sent = time.monotonic()
        edge.push_feature(make_feature("FLAG", version % 2 == 0, version))
        wait_for(all_at(cluster, version), BOUND, interval=0.01,
                 what=f"every worker serving v{version} (refresh is {REFRESH} s)")
        took.append(time.monotonic() - sent)
    print(f"{backend}: leader update -> all 6 workers serve it, sampled over HTTP: "
          + ", ".join(f"{t * 1000:.0f} ms" for t in took))

"""Regular-expression strategies: a pattern whose matching time ``re`` cannot bound is refused.

Before: ``^(a+)+$`` reached the SDK, and one request with a 28-character user key held the
worker (GIL included) for tens of seconds of backtracking.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.procs import wait_for
from tests.support.servers import fh_log_lines

StartCluster = Callable[..., Cluster]


def regex_feature(pattern: str, version: int) -> dict[str, Any]:
    feature = make_feature("REGEXED", False, version)
    feature["strategies"] = [{
        "id": "s1", "name": "by user key", "value": True,
        "attributes": [{"conditional": "REGEX", "fieldName": "userkey", "type": "STRING",
                        "values": [pattern]}],
    }]
    return feature


def for_user(cluster: Cluster, user: str) -> dict[int, Any]:
    path = f"/flags?key=REGEXED&user={urllib.parse.quote(user)}"
    return {pid: a["flags"]["REGEXED"] for pid, a in cluster.sample(path, timeout=10).items()}


def test_a_pathological_pattern_never_reaches_the_request_path(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    edge.set_features([make_feature("FLAG", True, 1), regex_feature("^a+$", 1)])
    cluster = start_cluster("gunicorn", 2)
    assert edge.wait_for_streams(2, timeout=10)
    wait_for(lambda: all(f["value"] is True for f in for_user(cluster, "aaa").values()), 10,
             what="a safe pattern evaluated for a matching user")
    assert all(f["value"] is False for f in for_user(cluster, "bbb").values())

    edge.push_feature(regex_feature("^(a+)+$", 2), stream_id=edge.streams()[0].id)
    wait_for(lambda: any("nests a repeat inside a repeat" in line
                         for line in fh_log_lines(cluster)), 5, what="the refusal logged")
    started = time.monotonic()
    answers = for_user(cluster, "a" * 28 + "!")
    took = time.monotonic() - started
    assert {(f["value"], f["version"]) for f in answers.values()} == {(False, 1)}, answers
    assert took < 3, f"{took:.1f} s for one request per worker"
    assert all(f["value"] is True for f in for_user(cluster, "aaa").values())  # v1 still applies

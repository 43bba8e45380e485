"""Regular-expression strategies evaluate on RE2 (linear time) and never remove a flag.

Before: the nested-repeat check refused ``^([a-z]+\\.)+corp\\.com$`` (linear, common) and
dropped the whole new version of the feature, so every worker kept the old value; and
``^(a+)+$`` was refused the same way. Now both versions arrive; the catastrophic pattern
runs on RE2, whose time is linear in the value, so a long user key costs nothing.
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


def regex_feature(pattern: str, version: int, value: bool = False) -> dict[str, Any]:
    feature = make_feature("REGEXED", value, version)
    feature["strategies"] = [{
        "id": "s1", "name": "by user key", "value": not value,
        "attributes": [{"conditional": "REGEX", "fieldName": "userkey", "type": "STRING",
                        "values": [pattern]}],
    }]
    return feature


def for_user(cluster: Cluster, user: str) -> dict[int, Any]:
    path = f"/flags?key=REGEXED&user={urllib.parse.quote(user)}"
    return {pid: a["flags"]["REGEXED"] for pid, a in cluster.sample(path, timeout=10).items()}


def answers_are(cluster: Cluster, user: str, value: bool, version: int) -> Callable[[], bool]:
    return lambda: {(f["value"], f["version"]) for f in for_user(cluster, user).values()} == {
        (value, version)}


def test_regex_strategies_evaluate_on_every_worker_and_never_drop_an_update(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    edge.set_features([make_feature("FLAG", True, 1), regex_feature("^a+$", 1)])
    cluster = start_cluster("gunicorn", 2)
    assert edge.wait_for_streams(2, timeout=10)
    wait_for(answers_are(cluster, "aaa", True, 1), 10, what="a simple pattern evaluated")
    assert all(f["value"] is False for f in for_user(cluster, "bbb").values())

    # the harmless nested repeat the old check refused: version 2 reaches every worker
    edge.push_feature(regex_feature(r"^([a-z]+\.)+corp\.com$", 2))
    wait_for(answers_are(cluster, "mail.eu.corp.com", True, 2), 10,
             what="the corp.com pattern applied (version 2 served)")
    wait_for(answers_are(cluster, "mail.example.com", False, 2), 10, what="and not matching")

    # turning the flag's default on in FeatureHub takes effect whatever its strategy holds
    edge.push_feature(regex_feature("^(a+)+$", 3, value=True))
    wait_for(answers_are(cluster, "someone", True, 3), 10, what="version 3 served")
    started = time.monotonic()
    answers = for_user(cluster, "a" * 2000 + "!")   # `re`: 2**2000 steps (request line < 4094)
    took = time.monotonic() - started
    assert {(f["value"], f["version"]) for f in answers.values()} == {(True, 3)}, answers
    assert took < 5, f"{took:.1f} s for one request per worker"
    assert all(f["value"] is False for f in for_user(cluster, "aaaa").values())  # it matches
    assert not any("REGEX" in line or "regular expression" in line
                   for line in fh_log_lines(cluster))


def test_a_pattern_no_safe_engine_takes_costs_only_its_strategy(
        start_cluster: StartCluster, edge: EdgeSimulator) -> None:
    """A backreference with nested repeats: RE2 refuses it and `re` cannot bound it. The
    strategy never matches, the feature's value and its other strategy are served."""
    feature = make_feature("REGEXED", False, 1)
    feature["strategies"] = [
        {"id": "s1", "name": "unbounded", "value": True,
         "attributes": [{"conditional": "REGEX", "fieldName": "userkey", "type": "STRING",
                         "values": [r"^((a+)+)\1$"]}]},
        {"id": "s2", "name": "vip", "value": True,
         "attributes": [{"conditional": "EQUALS", "fieldName": "userkey", "type": "STRING",
                         "values": ["vip"]}]},
    ]
    edge.set_features([feature])
    cluster = start_cluster("gunicorn", 2)
    assert edge.wait_for_streams(2, timeout=10)
    wait_for(answers_are(cluster, "vip", True, 1), 10, what="the other strategy served")
    started = time.monotonic()
    answers = for_user(cluster, "a" * 40 + "!")
    assert time.monotonic() - started < 5
    assert {(f["value"], f["version"]) for f in answers.values()} == {(False, 1)}, answers
    wait_for(lambda: any("never matches" in line and "no bound" in line
                         for line in fh_log_lines(cluster)), 5, what="the pattern logged")
    logged = [line for line in fh_log_lines(cluster) if "never matches" in line]
    assert len(logged) <= 2, logged   # once per worker, not once per request

"""The pytest plugin, used as an application's tests would use it."""

from __future__ import annotations

from pathlib import Path

import pytest

import fh_prefork
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.pytest_plugin import FeatureHubFlags


def test_flags_set_in_a_test_are_served_by_the_app(featurehub: FeatureHubFlags) -> None:
    assert fh_prefork.context().feature("NEW_CHECKOUT").get_value is None  # app starts lazily
    featurehub.set("NEW_CHECKOUT", True)
    assert fh_prefork.context().feature("NEW_CHECKOUT").is_enabled
    featurehub.set_many({"NEW_CHECKOUT": False, "GREETING": "hello", "LIMIT": 3})
    ctx = fh_prefork.context()
    assert ctx.feature("NEW_CHECKOUT").get_flag is False
    assert ctx.feature("GREETING").get_string == "hello"
    assert ctx.feature("LIMIT").get_number == 3
    featurehub.delete("GREETING")
    assert not fh_prefork.context().feature("GREETING").exists


def test_a_malformed_flag_is_refused_with_the_reason(featurehub: FeatureHubFlags) -> None:
    with pytest.raises(ValueError, match="BOOLEAN|boolean"):
        featurehub.set("FLAG", "not a bool", type="BOOLEAN")


def test_env_points_a_server_subprocess_at_the_test_edge(featurehub: FeatureHubFlags) -> None:
    assert featurehub.env["FEATUREHUB_EDGE_URL"] == featurehub.edge.url
    assert featurehub.env["FH_PREFORK_STORE"].startswith("file://")


def test_a_server_in_a_subprocess_is_waited_for_through_a_probe(
        featurehub: FeatureHubFlags, tmp_path: Path) -> None:
    """A real gunicorn started with ``featurehub.env``: ``set`` returns once every worker
    serves the new version, as the probe (an endpoint of the app) answers."""
    cluster = Cluster("gunicorn", 2, featurehub.env, log_dir=str(tmp_path)).start()
    try:
        def probe(key: str) -> int | None:
            served = {answer[key]["version"] if answer[key]["exists"] else None
                      for answer in cluster.flags(key).values()}   # every worker answers
            return served.pop() if len(served) == 1 else -1        # -1: workers disagree

        featurehub.set("NEW_CHECKOUT", True, probe=probe)
        assert {a["NEW_CHECKOUT"]["value"] for a in cluster.flags("NEW_CHECKOUT").values()} \
            == {True}
        featurehub.set("NEW_CHECKOUT", False, probe=probe)
        assert {a["NEW_CHECKOUT"]["value"] for a in cluster.flags("NEW_CHECKOUT").values()} \
            == {False}
        featurehub.delete("NEW_CHECKOUT", probe=probe)
        assert not any(a["NEW_CHECKOUT"]["exists"]
                       for a in cluster.flags("NEW_CHECKOUT").values())
    finally:
        cluster.stop()

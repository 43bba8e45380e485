"""The pytest plugin, used as an application's tests would use it."""

from __future__ import annotations

import pytest

import fh_prefork
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

"""The exporter turns a worker's typed health into gauges: one fact each, no status dict."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("prometheus_client", reason="pip install -e '.[test]'")

from prometheus_client import REGISTRY

from fh_prefork.health import WorkerHealth
from fh_prefork.prometheus import Exporter

FOLLOWER = WorkerHealth(
    pid=1, role="follower", edge_mode="leader", store_url="file:///run/x", edge_state="standby",
    edge_error=None, edge_connects=0, edge_terms=0, lease_edge="connected", ready=True,
    store_healthy=True, push_connected=True, last_refresh=None, features=3)


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_follower_learns_from_the_lease_that_edge_lost_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    health = [FOLLOWER]
    exporter = Exporter(lambda: health[0])
    exporter.step()
    assert gauge("fh_prefork_edge_key_not_found") == 0
    assert gauge("fh_prefork_role", role="follower") == 1
    assert gauge("fh_prefork_edge_state", state="standby") == 1
    assert gauge("fh_prefork_features") == 3
    health[0] = dataclasses.replace(FOLLOWER, lease_edge="key_not_found")
    exporter.step()
    assert gauge("fh_prefork_edge_key_not_found") == 1   # the follower never talks to Edge
    health[0] = dataclasses.replace(FOLLOWER, role="fallback", edge_state="backoff",
                                    store_healthy=False, lease_edge=None)
    exporter.step()
    assert gauge("fh_prefork_role", role="fallback") == 1
    assert gauge("fh_prefork_role", role="follower") == 0
    assert gauge("fh_prefork_edge_state", state="standby") == 0
    assert gauge("fh_prefork_store_healthy") == 0
    assert gauge("fh_prefork_edge_key_not_found") == 0

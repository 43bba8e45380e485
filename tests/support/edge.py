"""The Edge simulator a suite's ``edge`` fixture serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fh_prefork.testing.edge_simulator import EdgeSimulator


def serve_edge(features: list[dict[str, Any]], keepalive_interval: float,
               api_keys: list[str] | None = None) -> Iterator[EdgeSimulator]:
    """An Edge simulator serving ``features`` until the fixture is torn down
    (``yield from serve_edge(...)`` in a fixture); ``api_keys`` as EdgeSimulator takes them."""
    with EdgeSimulator(api_keys, keepalive_interval=keepalive_interval) as sim:
        sim.set_features(features)
        yield sim

"""Real prefork servers against a real memcached and the local Edge simulator."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.edge import serve_edge
from tests.support.servers import cluster_starter

API_KEY = "portfolio/env-srv/client*secret"
REFRESH = 0.5


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    yield from serve_edge([make_feature("FLAG", True, 1), make_feature("OTHER", False, 1)],
                          keepalive_interval=1.0)


@pytest.fixture
def server_env(edge: EdgeSimulator, memcached: Any, prefix: str) -> dict[str, str]:
    return {
        "FEATUREHUB_EDGE_URL": edge.url,
        "FEATUREHUB_API_KEY": API_KEY,
        "FH_PREFORK_STORE": memcached.url,
        "FH_PREFORK_PREFIX": prefix,
        "FH_PREFORK_REFRESH_SECONDS": str(REFRESH),
        "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }


#: Environment that leaves FH_PREFORK_STORE unset: the embedded default store, in a
#: runtime folder of the test's own (XDG_RUNTIME_DIR), so nothing outlives the test.
def default_store_env(tmp_path: Path) -> dict[str, str | None]:
    return {"FH_PREFORK_STORE": None, "XDG_RUNTIME_DIR": str(tmp_path)}


@pytest.fixture
def start_cluster(server_env: dict[str, str], tmp_path: Path
                  ) -> Iterator[Callable[..., Cluster]]:
    """Start clusters; every one is stopped, and its processes killed by pid, at teardown."""
    with cluster_starter(server_env, tmp_path) as start:
        yield start

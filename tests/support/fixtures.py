"""The suite's shared fixtures, in one plugin module (registered by tests/conftest.py).

Every folder uses the same real servers: a memcached and a Redis per session
(and one of its own for a test that stops or pauses it), a store of each backend,
the local Edge simulator and prefork clusters on them. Fixtures live here, so no
test module imports a fixture from another one.

A test is marked ``servers`` by what it uses (:data:`SERVER_FIXTURES`, directly or
through another fixture); a module that starts servers without a fixture (a
storm, a subprocess master) says so with a module-level ``pytestmark``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig

from fh_prefork.store import SessionStore, open_store
from fh_prefork.testing.clock import ManualClock
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from fh_prefork.testing.memory import MemoryMedium, memory_store

from .edge import serve_edge
from .memcached import Memcached
from .redis import Redis, RedisCluster
from .servers import cluster_starter

API_KEY = "portfolio/env-test/client*secret"
#: The prefork servers' key and refresh period (tests/servers and every folder that
#: starts clusters with :func:`start_cluster`).
SERVER_API_KEY = "portfolio/env-srv/client*secret"
REFRESH = 0.5
ROOT = Path(__file__).resolve().parents[2]

#: The backends a store test runs on unless marked ``backends(...)`` (see backend_kind).
REAL_BACKENDS = ("memcache", "file", "redis")
#: The in-memory one too: what the store-core tests' smoke runs use.
EVERY_BACKEND = ("memory", *REAL_BACKENDS)

#: Fixtures that start prefork servers (gunicorn, uWSGI, uvicorn) or an example's server:
#: a test using one, even through another fixture, is marked ``servers``.
SERVER_FIXTURES = frozenset({"start_cluster", "start_server"})

_prefixes = itertools.count()

#: Node ids of the collected tests marked ``servers`` (None before collection): the cluster
#: starter refuses to start servers for any other test, so a test that starts them without
#: the fixture or a mark fails at once instead of slowing the fast loop.
MARKED: set[str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "backends(*kinds): the store backends backend_kind (and "
                            "so make_store) runs the test on; default: the real ones")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test using ``backend_kind`` once per backend its closest ``backends`` mark names
    (a module's ``pytestmark``, overridden by a test's own), else on the real ones."""
    if "backend_kind" not in metafunc.fixturenames or any(
            "backend_kind" in _argnames(mark) for mark in metafunc.definition.iter_markers(
                "parametrize")):
        return      # the test gives the kinds itself
    mark = metafunc.definition.get_closest_marker("backends")
    metafunc.parametrize("backend_kind", mark.args if mark else REAL_BACKENDS, indirect=True)


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``servers`` every test that uses a server-starting fixture, and run those first.

    Server tests take seconds each and the rest milliseconds: handed out first
    (scripts/test gives pytest-xdist one test at a time), the long ones start
    while every worker is free and the short ones fill the gaps at the end,
    instead of one worker finishing a folder of long tests alone.
    """
    global MARKED
    MARKED = set()
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)
        if item.get_closest_marker("servers") is not None:
            MARKED.add(item.nodeid)
    items.sort(key=lambda item: item.nodeid not in MARKED)   # stable: file order kept


def require_servers_mark() -> None:
    """Fail the running test unless it is marked ``servers`` (outside pytest: nothing)."""
    running = os.environ.get("PYTEST_CURRENT_TEST")
    if MARKED is None or running is None:
        return
    nodeid = running.rsplit(" (", 1)[0]
    if nodeid not in MARKED:
        raise AssertionError(f"{nodeid} starts prefork servers but is not marked 'servers': "
                             "use the start_cluster fixture, or mark it "
                             "(@pytest.mark.servers or a module pytestmark)")


def make_config(api_key: str = API_KEY, edge_url: str = "http://127.0.0.1:9/") -> Any:
    return FeatureHubConfig(edge_url, [api_key])


# -- data stores --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def memcached() -> Iterator[Memcached]:
    with Memcached(item_size="8m") as server:
        yield server


@pytest.fixture
def own_memcached() -> Iterator[Memcached]:
    """A memcached this test may stop, restart or starve without disturbing the others."""
    with Memcached(item_size="8m") as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    with Redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[Redis]:
    """A Redis this test may stop, restart or pause without disturbing the others."""
    with Redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three masters on free loopback ports (about 5 s to start: the nodes must agree)."""
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The store backend of this run: "memcache", "file", "redis" or "memory" (see
    pytest_generate_tests)."""
    return str(request.param)


@pytest.fixture
def store_clock() -> ManualClock:
    """The clock the in-memory backend and its stores judge time by; the test steps it."""
    return ManualClock()


@pytest.fixture
def memory_medium(store_clock: ManualClock) -> MemoryMedium:
    return MemoryMedium(clock=store_clock)


@pytest.fixture
def store_url(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend_kind == "memory":
        raise ValueError("the in-memory backend has no URL: use make_store or memory_store")
    if backend_kind == "memcache":
        server: Memcached = request.getfixturevalue("memcached")
        return server.url
    if backend_kind == "redis":
        redis_server: Redis = request.getfixturevalue("redis_server")
        return redis_server.url
    return f"file://{tmp_path}/store"


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix per test, so tests sharing one memcached or Redis never meet."""
    return f"t{next(_prefixes)}"


@pytest.fixture
def make_store(backend_kind: str, request: pytest.FixtureRequest, prefix: str
               ) -> Iterator[Callable[..., SessionStore]]:
    """Build stores on this test's backend; every store built is closed at teardown.

    On "memory" they share the test's :func:`memory_medium` and judge time by its
    :func:`store_clock`."""
    built: list[SessionStore] = []
    medium: MemoryMedium | None = None
    store_url = ""
    if backend_kind == "memory":
        medium = request.getfixturevalue("memory_medium")
    else:
        store_url = request.getfixturevalue("store_url")

    def factory(config: Any = None, **opts: Any) -> SessionStore:
        opts.setdefault("prefix", prefix)
        opts.setdefault("refresh_timeout", 60.0)
        config = config or make_config()
        store = (memory_store(medium, config, opts) if medium is not None
                 else open_store(store_url, config, opts))
        assert store is not None
        built.append(store)
        return store

    yield factory
    for store in built:
        store.close(flush_timeout=0)


# -- Edge and prefork servers -------------------------------------------------------------------

@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    """The local Edge simulator with two flags (a folder's conftest may serve others)."""
    yield from serve_edge([make_feature("FLAG", True, 1), make_feature("OTHER", False, 1)],
                          keepalive_interval=1.0)


@pytest.fixture
def server_env(edge: EdgeSimulator, memcached: Memcached, prefix: str) -> dict[str, str]:
    return {
        "FEATUREHUB_EDGE_URL": edge.url,
        "FEATUREHUB_API_KEY": SERVER_API_KEY,
        "FH_PREFORK_STORE": memcached.url,
        "FH_PREFORK_PREFIX": prefix,
        "FH_PREFORK_REFRESH_SECONDS": str(REFRESH),
        "FH_PREFORK_EDGE_BACKOFF_MAX": "2",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }


def default_store_env(tmp_path: Path) -> dict[str, str | None]:
    """Environment that leaves FH_PREFORK_STORE unset: the embedded default store, in a
    runtime folder of the test's own (XDG_RUNTIME_DIR), so nothing outlives the test."""
    return {"FH_PREFORK_STORE": None, "XDG_RUNTIME_DIR": str(tmp_path)}


@pytest.fixture
def start_cluster(server_env: dict[str, str], tmp_path: Path
                  ) -> Iterator[Callable[..., Cluster]]:
    """Start clusters; every one is stopped, and its processes killed by pid, at teardown."""
    with cluster_starter(server_env, tmp_path) as start:
        yield start

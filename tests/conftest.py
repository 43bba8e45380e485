"""Shared fixtures: a real memcached per session, a store of each backend per test."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from featurehub_sdk.featurehub_config import FeatureHubConfig

from fh_prefork.store import SessionStore, open_store
from tests.support.memcached import Memcached
from tests.support.redis import Redis, RedisCluster

API_KEY = "portfolio/env-test/client*secret"

#: Tests that start a prefork server (gunicorn, uWSGI, uvicorn), a demo, a container or a
#: multi-process storm: marked ``servers`` so that ``pytest -m "not servers"`` is the fast
#: inner loop (the unit and store suites against real memcached, Redis and files).
SERVER_TESTS = ("servers/", "faults/", "history/", "interop/", "examples/", "hardening/",
                "store/test_storm.py",
                "leader/test_leader_servers.py", "openfeature/test_servers.py",
                "cli/test_bench.py", "openfeature/test_bench.py",
                "cli/test_settings_and_demo.py::test_demo")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = item.nodeid.removeprefix("tests/")
        if where.startswith(SERVER_TESTS):
            item.add_marker(pytest.mark.servers)
_prefixes = itertools.count()


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


def make_config(api_key: str = API_KEY, edge_url: str = "http://127.0.0.1:9/") -> Any:
    return FeatureHubConfig(edge_url, [api_key])


@pytest.fixture(params=["memcache", "file", "redis"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
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
def make_store(store_url: str, prefix: str) -> Iterator[Callable[..., SessionStore]]:
    """Build stores on this test's backend; every store built is closed at teardown."""
    built: list[SessionStore] = []

    def factory(config: Any = None, **opts: Any) -> SessionStore:
        opts.setdefault("prefix", prefix)
        opts.setdefault("refresh_timeout", 60.0)
        store = open_store(store_url, config or make_config(), opts)
        assert store is not None
        built.append(store)
        return store

    yield factory
    for store in built:
        store.close(flush_timeout=0)

"""The store follows the server's own item limit (memcached ``item_size_max``); the option
overrides it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client

from fh_prefork import MemcacheSessionStore
from fh_prefork.settings import load
from tests.conftest import make_config
from tests.support.memcached import Memcached
from tests.support.stores import feat, repo_of

#: a state of about 2 MB: over memcached's default 1 MB item, well under 8 MB
BIG = "x" * 2_000_000


@pytest.fixture(scope="module")
def memcached_8m() -> Iterator[Memcached]:
    server = Memcached(item_size="8m")
    server.start()
    yield server
    server.stop()


def stored_bytes(server: Memcached, prefix: str) -> int:
    client = Client(("127.0.0.1", server.port), connect_timeout=1, timeout=1)
    try:
        raw = client.get(f"{prefix}_env-test")
    finally:
        client.close()
    return len(raw or b"")


def write_big(server: Memcached, prefix: str, **opts: Any) -> MemcacheSessionStore:
    config = make_config()
    store = MemcacheSessionStore(server.url, config, {"prefix": prefix,
                                                      "refresh_timeout": 60.0, **opts})
    repo_of(config).notify("features", [feat("BIG", 1, BIG), feat("SMALL", 1)])
    store.flush(5)
    return store


def test_a_2mb_state_is_written_to_a_memcached_started_with_8m_items(
        memcached_8m: Memcached, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    store = write_big(memcached_8m, prefix)
    try:
        assert store.status()["pending"] == 0 and store.write_problem() is None
        assert stored_bytes(memcached_8m, prefix) > 2_000_000
        assert store.status()["max_item_bytes"] == 8 * 1024 * 1024 - 1024
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        store.close()


def test_the_option_overrides_the_servers_limit(memcached_8m: Memcached, prefix: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    store = write_big(memcached_8m, prefix, max_item_bytes=1_000_000)
    try:
        assert "1000000-byte item limit" in (store.write_problem() or "")
        assert stored_bytes(memcached_8m, prefix) == 0
        assert [r for r in caplog.records if r.levelno == logging.ERROR
                and "over the 1000000-byte item limit" in r.getMessage()]
    finally:
        store.close(flush_timeout=0)


def test_a_default_memcached_refuses_it_by_its_own_limit(prefix: str) -> None:
    with Memcached(item_size="1m") as server:
        store = write_big(server, prefix)
        try:
            assert "1047552-byte item limit" in (store.write_problem() or "")
        finally:
            store.close(flush_timeout=0)


def test_fh_prefork_max_item_bytes_reaches_the_store_options() -> None:
    env = {"FEATUREHUB_EDGE_URL": "http://edge", "FEATUREHUB_API_KEY": "a/b*c",
           "FH_PREFORK_STORE": "memcache://127.0.0.1:11211"}
    assert "max_item_bytes" not in load(env).store_options()
    assert load({**env, "FH_PREFORK_MAX_ITEM_BYTES": "4000000"}).store_options()[
        "max_item_bytes"] == 4_000_000

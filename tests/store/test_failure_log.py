"""A running store says what failed in words, once, and once when it ends: Redis out of memory
is "full", a Redis that went away is "unreachable", memcached that is down is "unreachable"."""

from __future__ import annotations

import logging

import pytest
import redis

from fh_prefork.store import MemcacheSessionStore, RedisSessionStore, SessionStore
from tests.conftest import make_config
from tests.support.memcached import Memcached
from tests.support.procs import hold_for, wait_for
from tests.support.redis import Redis
from tests.support.stores import feat, repo_of

OPTS = {"refresh_timeout": 0.2}


def store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "fh_prefork.store" and r.levelno >= logging.WARNING]


def keep_writing(store: SessionStore, config: object, versions: range) -> None:
    """An update every 0.1 s: each one a write attempt that fails while the fault lasts."""
    for version in versions:
        repo_of(config).notify("features", [feat("A", version)])
        hold_for(0.1)


def test_redis_out_of_memory_is_full_once_then_back(
        own_redis: Redis, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    admin = redis.Redis(host="127.0.0.1", port=own_redis.port, socket_timeout=2)
    config = make_config()
    store = RedisSessionStore(own_redis.url, config, {"prefix": prefix, **OPTS})
    try:
        repo_of(config).notify("features", [feat("A", 1)])
        assert store.flush(3)
        admin.set("ballast", b"x" * 3_000_000)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1mb")
        keep_writing(store, config, range(2, 30))          # ~3 s of failing writes
        lines = store_lines(caplog)
        print("\n".join(lines))
        assert len(lines) == 1 and " is full" in lines[0] and "maxmemory" in lines[0], lines
        admin.delete("ballast")
        admin.config_set("maxmemory", "0")
        wait_for(lambda: any("is back" in line for line in store_lines(caplog)), 5,
                 what="the end of the fault")
        assert store.flush(3)
        assert len(store_lines(caplog)) == 2
    finally:
        store.close(flush_timeout=0)


def test_memcached_down_is_unreachable_once_then_back(
        prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    with Memcached() as server:
        config = make_config()
        store = MemcacheSessionStore(server.url, config, {"prefix": prefix, **OPTS})
        try:
            repo_of(config).notify("features", [feat("A", 1)])
            assert store.flush(3)
            server.stop()
            keep_writing(store, config, range(2, 30))
            lines = store_lines(caplog)
            assert len(lines) == 1 and " is unreachable" in lines[0], lines
            server.start()
            wait_for(lambda: any("is back" in line for line in store_lines(caplog)), 5,
                     what="the end of the fault")
            assert len(store_lines(caplog)) == 2
        finally:
            store.close(flush_timeout=0)

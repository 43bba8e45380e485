"""Redis-only behaviour: URL forms, key layout shared with the JavaScript store, secrets,
the one-node atomic write, and an unreachable server. What every backend must do is in
test_contract.py."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
import redis
import redis.cluster

from fh_prefork import RedisSessionStore
from fh_prefork import features as fs
from fh_prefork import settings as s
from fh_prefork.store import open_store
from fh_prefork.store.redis import describe_url, split_url
from tests.conftest import make_config
from tests.support.procs import free_port
from tests.support.redis import Redis, RedisCluster, value_of
from tests.support.stores import feat, repo_of, write_and_close

BASE = {"FEATUREHUB_EDGE_URL": "http://edge:8085", "FEATUREHUB_API_KEY": "p/env/c*s"}


@pytest.mark.parametrize("url, shown", [
    ("redis://h:1", "redis://h:1/0"),
    ("redis://:secret@h:1/2", "redis://:***@h:1/2"),
    ("redis://alice:secret@h:1", "redis://alice:***@h:1/0"),
    ("rediss://alice:secret@h:6380/1?ssl_cert_reqs=none", "rediss://alice:***@h:6380/1"),
    ("redis+cluster://:secret@h:7000", "redis+cluster://:***@h:7000"),
    ("rediss+cluster://h:7000", "rediss+cluster://h:7000"),
    ("unix:///run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
])
def test_urls_are_read_by_redis_py_and_shown_without_the_password(url: str, shown: str) -> None:
    assert describe_url(url) == shown
    loaded = s.load({**BASE, "FH_PREFORK_STORE": url})
    assert loaded.store == url, "the URL itself is kept: redis-py needs the password"
    assert loaded.store_display == shown and "secret" not in json.dumps(loaded.public())
    assert split_url(url)[1] == ("+cluster" in url)


def test_key_layout_is_the_javascript_stores(redis_server: Redis, prefix: str) -> None:
    config = make_config("p/env42/c*s")
    store = RedisSessionStore(redis_server.url, config, {"prefix": prefix})
    write_and_close(store, config, "features", [feat("B", 2), feat("A", 1)])
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert json.loads(value_of(client, f"{prefix}_env42")) == [feat("A", 1), feat("B", 2)]
        assert client.get(f"{prefix}_env42_sha") == fs.fingerprint(
            [feat("A", 1), feat("B", 2)]).encode()
        assert client.type(f"{prefix}_env42") == b"string"
        assert client.get(f"{prefix}_env42_deleted") is None, "no deletion, no tombstones key"
    finally:
        client.close()


def test_password_never_reaches_logs_or_status(caplog: pytest.LogCaptureFixture,
                                               prefix: str) -> None:
    with Redis(password="s3cret-pw") as server:
        config = make_config()
        with caplog.at_level(logging.DEBUG):
            store = open_store(server.url, config, {"prefix": prefix})
            assert store is not None
            try:
                repo_of(config).notify("features", [feat("A", 1)])
                assert store.flush(2)
                status = json.dumps(store.status())
            finally:
                store.close()
        assert "s3cret-pw" not in status and "s3cret-pw" not in caplog.text
        assert ":***@" in status
        # a wrong password: refused, and still not logged
        bad = server.url.replace("s3cret-pw", "wrong-pw")
        with caplog.at_level(logging.DEBUG):
            store = open_store(bad, make_config(), {"prefix": prefix})
            assert store is not None
            status = json.dumps(store.status())
            store.close(flush_timeout=0)
        assert "wrong-pw" not in status and "wrong-pw" not in caplog.text


def test_one_node_write_is_one_atomic_step_the_javascript_watch_sees(
        redis_server: Redis, prefix: str) -> None:
    """A JavaScript writer WATCHes _sha: our write must touch it, or its MULTI overwrites us."""
    config = make_config()
    store = RedisSessionStore(redis_server.url, config, {"prefix": prefix})
    js = redis.Redis.from_url(redis_server.url)
    try:
        repo_of(config).notify("features", [feat("A", 1)])
        assert store.flush(2)
        key = f"{prefix}_env-test"
        pipe = js.pipeline()
        pipe.watch(f"{key}_sha")  # type: ignore[no-untyped-call]
        sha_seen = pipe.get(f"{key}_sha")
        repo_of(config).notify("feature", feat("A", 2))   # our write lands between
        assert store.flush(2)
        pipe.multi()
        pipe.set(f"{key}_sha", b"js")
        pipe.set(key, b"[]")
        with pytest.raises(redis.WatchError):
            pipe.execute()
        assert sha_seen != js.get(f"{key}_sha")
        assert [f["version"] for f in json.loads(value_of(js, key))] == [2]
    finally:
        store.close()
        js.close()


def test_cluster_store_writes_and_reads_across_slots(redis_cluster: RedisCluster,
                                                     prefix: str) -> None:
    a_cfg, b_cfg = make_config(), make_config()
    a = open_store(redis_cluster.url, a_cfg, {"prefix": prefix, "refresh_timeout": 60})
    b = open_store(redis_cluster.url, b_cfg, {"prefix": prefix, "refresh_timeout": 60})
    assert a is not None and b is not None
    try:
        repo_of(a_cfg).notify("features", [feat("A", 1), feat("B", 1)])
        assert a.flush(2)
        assert b.refresh(2)
        assert repo_of(b_cfg).feature("B").get_version == 1
        assert a.status()["backend"].startswith("redis+cluster://127.0.0.1:")
    finally:
        a.close()
        b.close()


def test_unreachable_redis_constructor_returns_fast_and_keeps_updates(prefix: str) -> None:
    port = free_port()
    config = make_config()
    started = time.monotonic()
    store = open_store(f"redis://127.0.0.1:{port}", config,
                       {"prefix": prefix, "refresh_timeout": 0.2, "timeout": 0.3,
                        "connect_timeout": 0.3})
    assert store is not None
    try:
        assert time.monotonic() - started < 3
        repo_of(config).notify("features", [feat("A", 1)])
        assert not store.flush(0.5)
        assert store.status()["pending"], "kept for later, never dropped"
        with Redis(port=port) as server:
            assert store.flush(5)
            assert json.loads(value_of(redis.Redis.from_url(server.url), f"{prefix}_env-test"))[0][
                "key"] == "A"
    finally:
        store.close(flush_timeout=0)


def test_status_command_reads_redis_without_showing_the_password(prefix: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "fh-prefork")
    with Redis(password="s3cret-pw") as server:
        config = make_config()
        store = open_store(server.url, config, {"prefix": prefix})
        assert store is not None
        try:
            repo_of(config).notify("features", [feat("A", 1)])
            assert store.flush(2)
        finally:
            store.close()
        done = subprocess.run([exe, "status", "--json", "--store", server.url, "--api-key",
                               "portfolio/env-test/client*secret", "--prefix", prefix],
                              capture_output=True, text=True, timeout=30)
    report = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert report["feature_count"] == 1 and report["fingerprint_ok"]
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert report["store"].startswith("redis://:***@127.0.0.1:")


def test_cluster_writer_dying_between_data_and_sha_is_repaired(redis_cluster: RedisCluster,
                                                               prefix: str) -> None:
    """On a cluster the data and _sha are two writes: a stale _sha is repaired on a read."""
    from fh_prefork.store.backend import StoreUnavailable
    from fh_prefork.testing.faults import inject

    class Died(StoreUnavailable):
        pass

    def die() -> None:
        raise Died("killed between the data and the fingerprint")

    cfg, other_cfg = make_config(), make_config()
    store = open_store(redis_cluster.url, cfg, {"prefix": prefix, "refresh_timeout": 60,
                                                "push": False})
    other: Any = None
    assert store is not None
    try:
        repo_of(cfg).notify("features", [feat("A", 1)])
        assert store.flush(2)
        inject(store, "between_data_and_fingerprint", die)
        repo_of(cfg).notify("feature", feat("A", 2))
        assert not store.flush(1), "the write died after the data, before _sha"
        client = redis.cluster.RedisCluster.from_url(redis_cluster.url.replace("+cluster", ""))
        try:
            key = f"{prefix}_env-test"
            assert json.loads(value_of(client, key))[0]["version"] == 2
            assert client.get(f"{key}_sha") == fs.fingerprint([feat("A", 1)]).encode()
            # opened only now: its first tick (at a random phase) would repair _sha early
            other = open_store(redis_cluster.url, other_cfg,
                               {"prefix": prefix, "refresh_timeout": 60, "push": False})
            assert other is not None
            assert other.refresh(3)     # a full read finds _sha matching no formula...
            assert repo_of(other_cfg).feature("A").get_version == 2
            assert client.get(f"{key}_sha") == fs.fingerprint([feat("A", 2)]).encode(), \
                "...and repairs it"
        finally:
            client.close()
    finally:
        store.close(flush_timeout=0)
        if other is not None:
            other.close(flush_timeout=0)


def test_push_and_redis_timeout_settings() -> None:
    on = s.load({**BASE, "FH_PREFORK_STORE": "redis://h:1"})
    assert on.store_options()["push"] is True
    assert on.store_options()["timeout"] == on.store_options()["connect_timeout"] == 0.5
    off = s.load({**BASE, "FH_PREFORK_STORE": "redis://h:1", "FH_PREFORK_PUSH": "off",
                  "FH_PREFORK_REDIS_TIMEOUT": "0.2"})
    assert off.store_options()["push"] is False and off.store_options()["timeout"] == 0.2
    with pytest.raises(s.SettingsError, match="FH_PREFORK_PUSH"):
        s.load({**BASE, "FH_PREFORK_PUSH": "sometimes"})


def test_a_client_that_decodes_responses_is_refused(redis_server: Redis) -> None:
    """It would raise inside redis-py on a zlib or junk value: an outage that never ends."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisSessionStore(client, make_config())
    finally:
        client.close()


def test_a_fingerprint_repair_never_overwrites_a_newer_write(redis_server: Redis,
                                                             prefix: str) -> None:
    """settle() repairs _sha for the data it read; a write that landed in between set its
    own fingerprint, which an older repair must not replace."""
    from fh_prefork.store import open_backend

    key = f"{prefix}_env-test"
    backend = open_backend(redis_server.url, key)
    writer = open_backend(redis_server.url, key)
    try:
        old = fs.encode([feat("A", 1)])
        assert writer.write(old, fs.fingerprint([feat("A", 1)]), writer.read())
        snapshot = backend.read()
        new_state = [feat("A", 1), feat("B", 1)]
        assert writer.write(fs.encode(new_state), fs.fingerprint(new_state), writer.read())
        assert backend.settle(snapshot, fs.fingerprint([feat("A", 1)])) is None
        assert backend.change_token() == fs.fingerprint(new_state)
        assert backend.settle(backend.read(), "f" * 64) == "f" * 64   # unchanged data: set
    finally:
        backend.close()
        writer.close()

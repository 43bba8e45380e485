"""The master checks the store once at start and says what is wrong in one line naming the
setting: authentication failed, forbidden (an ACL without @scripting), full, unreadable TLS
files, unreachable. And the minimum Redis ACL of docs/operations/store-health.md works."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from fh_prefork.settings import Settings, load
from fh_prefork.store import RedisSessionStore
from fh_prefork.store.health import check_store_at_start
from fh_prefork.store.lease import Lease
from fh_prefork.store.options import RedisSessionStoreOptions
from fh_prefork.store.redis import RedisBackend, make_client
from fh_prefork.testing.cluster import Cluster
from fh_prefork.testing.edge_simulator import EdgeSimulator
from tests.conftest import make_config
from tests.support.procs import free_port, wait_for
from tests.support.redis import Redis
from tests.support.servers import fh_log_lines, versions
from tests.support.stores import feat, repo_of

StartCluster = Callable[..., Cluster]
PREFIX = "featurehub"
API_KEY = "portfolio/env-test/client*secret"   # the environment of tests.conftest.make_config
#: the minimum ACL, exactly as docs/operations/store-health.md gives it
MINIMUM_ACL = ("on >s3cret resetkeys ~featurehub_* resetchannels &featurehub_* -@all "
               "+get +mget +set +del +evalsha +eval +script|load +publish +subscribe "
               "+unsubscribe +ping")
NO_SCRIPTING = MINIMUM_ACL.replace("+evalsha +eval +script|load ", "")


def admin(server: Redis) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)


def set_user(server: Redis, rules: str) -> None:
    """``ACL SETUSER fhprefork reset <rules>`` on ``server``."""
    admin(server).execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", "fhprefork", "reset", *rules.split())


def settings_for(url: str, **env: str) -> Settings:
    return load({"FEATUREHUB_EDGE_URL": "http://127.0.0.1:9/", "FEATUREHUB_API_KEY": API_KEY,
                 "FH_PREFORK_STORE": url, "FH_PREFORK_PREFIX": PREFIX, **env})


def checked(url: str, caplog: pytest.LogCaptureFixture, **env: str) -> list[logging.LogRecord]:
    """The start check's WARNING and ERROR records for ``url``."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fh_prefork"):
        check_store_at_start(settings_for(url, **env))
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_minimum_acl_is_enough_for_the_store_push_and_the_lease(
        own_redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    set_user(own_redis, MINIMUM_ACL)
    url = f"redis://fhprefork:s3cret@127.0.0.1:{own_redis.port}/0"
    assert checked(url, caplog) == []
    assert any("checked at start" in r.getMessage() for r in caplog.records)
    writer_config, reader_config = make_config(), make_config()
    opts = {"prefix": PREFIX, "refresh_timeout": 60.0}
    writer = RedisSessionStore(url, writer_config, opts)
    reader = RedisSessionStore(url, reader_config, opts)
    try:
        wait_for(lambda: _push_connected(reader), 5, what="push subscribed")
        repo_of(writer_config).notify("features", [feat("A", 1)])
        assert writer.flush(3)
        # the reader hears it by push (its refresh timer is a minute away)
        wait_for(lambda: repo_of(reader_config).feature("A").get_version == 1, 5,
                 what="the write to reach the other store by push")
        assert writer.counters.errors == 0 and reader.counters.errors == 0
    finally:
        writer.close()
        reader.close()
    backend = RedisBackend(lambda: make_client(url, RedisSessionStoreOptions()),
                           f"{PREFIX}_env-test", "lease probe", False)
    try:
        mine = Lease("h:1:n", "h", 1, time.time() + 5)
        assert backend.lease_acquire(mine, 5).held
        assert backend.lease_renew(mine, 5).held
        assert backend.lease_release(mine)
    finally:
        backend.close()


def test_an_acl_without_scripting_is_an_error_saying_forbidden(
        own_redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    set_user(own_redis, NO_SCRIPTING)
    url = f"redis://fhprefork:s3cret@127.0.0.1:{own_redis.port}/0"
    records = checked(url, caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    line = records[0].getMessage()
    print(line)
    assert records[0].levelno == logging.ERROR
    assert "FH_PREFORK_STORE" in line and "forbidden" in line and "NOPERM" in line
    assert "unreachable" not in line and "s3cret" not in line


@pytest.mark.parametrize("missing", ["&featurehub_* ", "+subscribe "])
def test_an_acl_without_the_channel_or_subscribe_is_forbidden(
        own_redis: Redis, caplog: pytest.LogCaptureFixture, missing: str) -> None:
    """Every write publishes (push on or off); push also subscribes."""
    set_user(own_redis, MINIMUM_ACL.replace(missing, ""))
    url = f"redis://fhprefork:s3cret@127.0.0.1:{own_redis.port}/0"
    records = checked(url, caplog)
    assert len(records) == 1 and "forbidden" in records[0].getMessage(), records
    push_off = checked(url, caplog, FH_PREFORK_PUSH="off")
    assert push_off == [] if missing == "+subscribe " else len(push_off) == 1


def test_a_wrong_password_is_an_error_saying_authentication_failed(
        own_redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    set_user(own_redis, MINIMUM_ACL)
    records = checked(f"redis://fhprefork:wrong@127.0.0.1:{own_redis.port}/0", caplog)
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    line = records[0].getMessage()
    print(line)
    assert "FH_PREFORK_STORE" in line and "authentication failed" in line
    assert "unreachable" not in line and "wrong" not in line


def test_a_redis_out_of_memory_is_an_error_saying_full(
        own_redis: Redis, caplog: pytest.LogCaptureFixture) -> None:
    server = admin(own_redis)
    server.set("ballast", b"x" * 3_000_000)
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", "1mb")
    records = checked(own_redis.url, caplog)
    assert len(records) == 1 and records[0].levelno == logging.ERROR, records
    line = records[0].getMessage()
    print(line)
    assert "full" in line and "OOM" in line


def test_a_missing_tls_client_certificate_is_an_error_saying_unreadable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = (f"rediss://127.0.0.1:{free_port()}/0?ssl_certfile={tmp_path}/client.pem"
           f"&ssl_keyfile={tmp_path}/client.key")
    records = checked(url, caplog)
    assert len(records) == 1 and records[0].levelno == logging.ERROR, records
    line = records[0].getMessage()
    assert "unreadable" in line and "client.pem does not exist" in line, line


def test_an_unreachable_store_is_a_warning_saying_unreachable(
        caplog: pytest.LogCaptureFixture) -> None:
    for url in (f"redis://127.0.0.1:{free_port()}/0", f"memcache://127.0.0.1:{free_port()}"):
        records = checked(url, caplog)
        assert len(records) == 1 and records[0].levelno == logging.WARNING, records
        assert "unreachable" in records[0].getMessage()


@pytest.mark.parametrize(("options", "word"), [("ro,size=1m", "forbidden"),
                                               ("size=64k", "full")])
def test_a_read_only_or_full_store_folder_is_an_error_in_its_words(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, options: str, word: str) -> None:
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        if word == "full":
            with open(folder / "filler", "wb", buffering=0) as f:
                with pytest.raises(OSError):
                    for _ in range(64):
                        f.write(b"x" * 4096)
        records = checked(f"file://{folder}", caplog)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)
    assert len(records) == 1 and records[0].levelno == logging.ERROR, records
    print(records[0].getMessage())
    assert word in records[0].getMessage()


def test_the_master_says_it_once_and_workers_serve_from_edge(
        start_cluster: StartCluster, own_redis: Redis, edge: EdgeSimulator) -> None:
    set_user(own_redis, MINIMUM_ACL)
    cluster = start_cluster("gunicorn", 4, env={
        "FH_PREFORK_STORE": f"redis://fhprefork:wrong@127.0.0.1:{own_redis.port}/0"})
    wait_for(lambda: set(versions(cluster).values()) == {1}, 10, what="flags from Edge")
    said = [line for line in fh_log_lines(cluster)
            if "FH_PREFORK_STORE" in line and "authentication failed" in line]
    print("\n".join(said))
    assert len(said) == 1, fh_log_lines(cluster)
    assert f"[{cluster.master_pid}]" in said[0], said


def _push_connected(store: RedisSessionStore) -> bool:
    push = store.status()["push"]
    return push is not None and push["connected"]

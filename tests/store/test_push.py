"""Push: a write wakes every other store at once, not at its next refresh.

Redis publishes on the channel named after the data key; the embedded store has
the kernel's file notifications (inotify); memcached keeps polling. Every store
here refreshes once a minute, so only a notification explains an update seen
within seconds. Bounds are loose (a loaded 2-core machine); the figures are in
``fh-prefork bench --only push``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from fh_prefork.listener import ListeningRepository
from fh_prefork.store import SessionStore, open_store
from tests.conftest import make_config
from tests.support.procs import wait_for, wait_quiet
from tests.support.redis import Redis
from tests.support.stores import feat

SLOW = 60.0   # s between refresh ticks: polling cannot explain anything below
BOUND = 3.0   # s, loose



def repo(config: Any) -> ListeningRepository:
    r = config.repository()
    assert isinstance(r, ListeningRepository)
    return r


def version(config: Any, key: str) -> int:
    return int(repo(config).feature(key).get_version or 0)


@pytest.fixture(params=["file", "redis", "redis-cluster"])
def push_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server").url)
    if request.param == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return f"file://{tmp_path}/store"


@pytest.fixture
def stores(prefix: str) -> Any:
    built: list[SessionStore] = []

    def make(url: str, **opts: Any) -> tuple[Any, SessionStore]:
        config = make_config()
        opts.setdefault("prefix", prefix)
        opts.setdefault("refresh_timeout", SLOW)
        store = open_store(url, config, opts)
        assert store is not None
        built.append(store)
        return config, store

    yield make
    for store in built:
        store.close(flush_timeout=0)


def test_a_write_wakes_the_other_stores_at_once(push_url: str, stores: Any) -> None:
    writer_cfg, writer = stores(push_url)
    readers = [stores(push_url) for _ in range(3)]
    wait_for(lambda: all(getattr(s._notifier, "connected", True) for _, s in readers), BOUND,
             what="every reader subscribed")
    for v in range(1, 6):
        repo(writer_cfg).notify("feature", feat("A", v))
        def every_reader_at(v: int = v) -> bool:
            return all(version(c, "A") == v for c, _ in readers)

        wait_for(every_reader_at, BOUND, interval=0.002, what=f"every reader at version {v}")


def test_a_write_landing_before_push_starts_is_not_missed(
        push_url: str, stores: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store thread starts push after the constructor's read: a write landing between
    the two is found by the notifier's first look at the change token, not a minute later
    at the next refresh."""
    writer_cfg, writer = stores(push_url)
    repo(writer_cfg).notify("feature", feat("A", 1))
    assert writer.flush(BOUND)
    start = SessionStore._start_notifier

    def write_first(self: SessionStore) -> None:
        if self is not writer and version(writer_cfg, "A") == 1:
            repo(writer_cfg).notify("feature", feat("A", 2))
            assert writer.flush(BOUND)
        start(self)

    monkeypatch.setattr(SessionStore, "_start_notifier", write_first)
    reader_cfg, _ = stores(push_url)
    wait_for(lambda: version(reader_cfg, "A") == 2, BOUND,
             what="the write made between the reader's read and its push start")


def test_push_off_or_memcached_polls(stores: Any, memcached: Any, tmp_path: Path) -> None:
    _, off = stores(f"file://{tmp_path}/store", push=False)
    _, mc = stores(memcached.url)
    assert off._notifier is None and mc._notifier is None


def test_idle_costs_nothing_but_the_safety_poll(push_url: str, stores: Any) -> None:
    cfg, store = stores(push_url)
    other_cfg, other = stores(push_url)
    repo(cfg).notify("features", [feat("A", 1)])
    assert store.flush(2)
    wait_for(lambda: version(other_cfg, "A") == 1, BOUND, what="the other store's read")

    def counts() -> tuple[int, int, int]:
        return (store.counters.reads, other.counters.reads, other.counters.refreshes)

    # the write's notifications may wake the stores more than once, late on a loaded
    # machine: idling starts once those ticks are over
    before = wait_quiet(counts, quiet=0.3, timeout=BOUND * 3, what="the write's ticks")
    time.sleep(0.5)   # idle: nothing may be read (the refresh period is a minute)
    after = counts()
    assert after[:2] == before[:2], "a full read while idle"
    # a store's first safety tick lands at a random moment of its first minute (jitter),
    # so one tick (a token check, no read) may fall inside the window; a second may not
    assert after[2] - before[2] <= 1, "notifications kept waking an idle store"


def test_close_interrupts_a_blocked_wait_promptly(push_url: str, stores: Any) -> None:
    _, store = stores(push_url)
    notifier = store._notifier
    assert notifier is not None
    # the store thread starts the notifier just after the constructor: close it once its
    # thread waits for notifications, not before it exists
    wait_for(lambda: notifier.status()["connected"], 10, what="the notifier to subscribe")
    thread = notifier._thread
    assert thread is not None and thread.is_alive()
    started = time.monotonic()
    store.close(flush_timeout=0)
    took = time.monotonic() - started
    print(f"close with a notifier on {push_url.split(':')[0]}: {took:.3f} s")
    assert took < 1.5
    assert not thread.is_alive()


def test_a_deleted_data_file_is_written_back_at_once(stores: Any, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/store"
    cfg, store = stores(url)
    _, other = stores(url)
    repo(cfg).notify("features", [feat("A", 1), feat("B", 1)])
    assert store.flush(2)
    data = next((tmp_path / "store").glob("*_env-test.json"))
    data.unlink()
    wait_for(data.exists, BOUND, what="the data file written back (not at the next minute)")


def test_redis_subscriber_reconnects_and_reads_in_full(own_redis: Redis, stores: Any) -> None:
    cfg, store = stores(own_redis.url)
    _, other = stores(own_redis.url)
    repo(cfg).notify("features", [feat("A", 1), feat("B", 1)])
    assert store.flush(2)
    wait_for(lambda: other._notifier is not None and other._notifier.connected, BOUND,
             what="the subscriber connected")
    reads = other.counters.reads
    own_redis.restart()                        # empty, every connection dropped
    wait_for(lambda: other._notifier.reconnects >= 1, 10, what="the subscriber back")
    wait_for(lambda: other.counters.reads > reads, BOUND, what="a full read once reconnected")
    client = redis.Redis.from_url(own_redis.url)
    try:   # both held the state: the emptied server is refilled, long before a refresh tick
        wait_for(lambda: client.get(f"{store._backend.data_key}") is not None, BOUND,
                 what="the state written back into the restarted Redis")
    finally:
        client.close()


def test_a_writer_that_does_not_publish_is_seen_at_the_safety_poll(
        redis_server: Redis, stores: Any, prefix: str) -> None:
    """The JavaScript store never publishes: its writes arrive at the refresh timer."""
    cfg, store = stores(redis_server.url, refresh_timeout=0.2)
    client = redis.Redis.from_url(redis_server.url)
    try:
        import json

        from fh_prefork import features as fs
        value = [feat("JS", 3)]
        client.set(f"{prefix}_env-test", json.dumps(value))
        client.set(f"{prefix}_env-test_sha", fs.fingerprint(value))
    finally:
        client.close()
    wait_for(lambda: version(cfg, "JS") == 3, BOUND, what="the unpublished write")




def test_a_subscriber_the_server_refuses_says_so_in_the_log_and_status(
        own_redis: Redis, stores: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An ACL without SUBSCRIBE turns push off for good: the operator must hear of it."""
    admin = redis.Redis.from_url(own_redis.url)
    try:
        admin.acl_setuser("nosub", enabled=True, passwords=["+secret"], keys=["*"],
                          channels=["*"], commands=["+@all", "-subscribe", "-ssubscribe"])
    finally:
        admin.close()
    url = own_redis.url.replace("redis://", "redis://nosub:secret@")
    cfg, store = stores(url)
    wait_for(lambda: any("no change notifications" in r.getMessage() for r in caplog.records),
             BOUND, what="the refusal in the log")
    line = next(r.getMessage() for r in caplog.records
                if "no change notifications" in r.getMessage())
    assert "NOPERM" in line or "permission" in line.lower(), line
    assert "secret" not in line
    push = store.status()["push"]
    assert push["connected"] is False and push["last_error"]
    repo(cfg).notify("features", [feat("A", 1)])
    assert store.flush(2), "the store itself still works"


def test_a_folder_watch_that_cannot_return_says_so_and_resumes(
        tmp_path: Path, stores: Any, caplog: pytest.LogCaptureFixture) -> None:
    url = f"file://{tmp_path}/store"
    cfg, store = stores(url)
    folder = tmp_path / "store"
    wait_for(lambda: store.status()["push"]["connected"], BOUND, what="the watch")
    moved = tmp_path / "elsewhere"
    folder.rename(moved)           # the watched folder goes away: the watch ends with it
    wait_for(lambda: any("no change notifications" in r.getMessage()
                         for r in caplog.records), BOUND, what="the lost watch in the log")
    assert not store.status()["push"]["connected"]
    moved.rename(folder)
    wait_for(lambda: any("change notifications for" in r.getMessage() and "resumed"
                         in r.getMessage() for r in caplog.records), BOUND,
             what="the watch back, in the log")
    # the move back is itself an event on the watch, which is then made once more
    wait_for(lambda: store.status()["push"]["connected"], BOUND, what="the watch back")

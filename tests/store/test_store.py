"""The store core: writing off-thread, replaying, merging, retrying, junk, closing.

The core does not depend on the medium, so these run once, on the in-memory
backend (held to the real backends' contract in test_contract.py). The few
marked ``backends(*EVERY_BACKEND)`` are the smoke runs on memcached, the
embedded file and Redis: what each medium itself must carry (a replay at start,
a refresh seeing another process's write, a tombstone, a lost compare-and-set).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from fh_prefork import features as fs
from fh_prefork.store import SessionStore
from fh_prefork.testing import faults
from tests.conftest import make_config
from tests.support.fixtures import EVERY_BACKEND
from tests.support.procs import wait_for
from tests.support.stores import feat, peek, repo_of

StoreFactory = Callable[..., SessionStore]

pytestmark = pytest.mark.backends("memory")
#: a smoke test: on every backend, the real ones too
on_every_backend = pytest.mark.backends(*EVERY_BACKEND)


def stored(store: SessionStore) -> dict[str, int]:
    """What the backend holds right now, id -> version, read around the store."""
    snapshot = peek(store).read()
    return {f["id"]: f["version"] for f in fs.decode(snapshot.value, 10**8).features}


def test_constructing_attaches_a_listening_repository(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    assert store in repo_of(config).raw_update_listeners


def test_edge_update_is_written_off_thread(make_store: StoreFactory) -> None:
    """notify() only marks the store: it returns while the store's write is stuck."""
    import threading as _threading

    config = make_config()
    store = make_store(config)
    in_write, release = _threading.Event(), _threading.Event()

    def stuck() -> None:
        in_write.set()
        release.wait(10)

    undo = faults.inject(store, "before_write", stuck)
    try:
        repo_of(config).notify("feature", feat("A", 1))   # must return although...
        assert in_write.wait(5), "...the store thread is writing it"
        assert stored(store) == {}
    finally:
        release.set()
        undo()
    assert store.flush(2.0)
    assert stored(store) == {"id-A": 1}
    assert store.counters.writes == 1


@on_every_backend
def test_new_store_replays_what_the_store_holds_before_returning(
        make_store: StoreFactory) -> None:
    writer_config = make_config()
    writer = make_store(writer_config)
    repo_of(writer_config).notify("features", [feat("A", 2, False), feat("B", 1)])
    assert writer.flush(2.0)

    reader_config = make_config()
    reader = make_store(reader_config)
    repo = repo_of(reader_config)
    assert repo.feature("A").get_version == 2 and repo.feature("A").get_boolean is False
    assert repo.feature("B").is_enabled
    assert reader.counters.writes == 0, "a replay must never be written back"


@on_every_backend
def test_refresh_picks_up_writes_of_other_processes(make_store: StoreFactory) -> None:
    a_config, b_config = make_config(), make_config()
    a = make_store(a_config)
    make_store(b_config, refresh_timeout=0.1)
    repo_of(a_config).notify("feature", feat("A", 1))
    assert a.flush(2.0)
    wait_for(lambda: repo_of(b_config).feature("A").get_version == 1, 3, what="refresh")
    repo_of(a_config).notify("feature", feat("A", 2, False))
    wait_for(lambda: repo_of(b_config).feature("A").get_boolean is False, 3, what="update")


@on_every_backend
def test_delete_reaches_the_store_and_other_processes(make_store: StoreFactory) -> None:
    a_config, b_config = make_config(), make_config()
    a = make_store(a_config)
    repo_of(a_config).notify("features", [feat("A", 1), feat("B", 1)])
    assert a.flush(2.0)
    make_store(b_config, refresh_timeout=0.1)
    assert repo_of(b_config).feature("B").exists
    repo_of(a_config).notify("delete_feature", {"id": "id-B", "key": "B", "version": 1})
    assert a.flush(2.0)
    assert stored(a) == {"id-A": 1}
    wait_for(lambda: not repo_of(b_config).feature("B").exists, 3, what="delete replayed")


def test_older_version_never_replaces_newer(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    repo_of(config).notify("feature", feat("A", 5))
    assert store.flush(2.0)
    other_config = make_config()
    other = make_store(other_config)
    repo_of(other_config).notify("feature", feat("A", 3))
    assert other.flush(2.0)
    assert stored(store) == {"id-A": 5}
    assert repo_of(other_config).feature("A").get_version == 5


def test_same_update_twice_writes_once(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    for _ in range(3):
        repo_of(config).notify("features", [feat("A", 1), feat("B", 1)])
        assert store.flush(2.0)
    assert store.counters.writes == store.counters.write_attempts == 1


@on_every_backend
def test_competing_writer_between_read_and_cas_both_survive(
        make_store: StoreFactory) -> None:
    """A writer that sneaks in after our read makes our CAS fail; the retry re-merges."""
    config, rival_config = make_config(), make_config()
    store = make_store(config)
    rival = make_store(rival_config)
    injected: list[bool] = []

    def compete() -> None:
        if injected:
            return
        injected.append(True)
        repo_of(rival_config).notify("feature", feat("RIVAL", 1))
        assert rival.flush(2.0)

    undo = faults.inject(store, "before_write", compete)
    try:
        repo_of(config).notify("feature", feat("MINE", 1))
        assert store.flush(5.0)
    finally:
        undo()
    assert injected
    assert stored(store) == {"id-MINE": 1, "id-RIVAL": 1}
    assert store.counters.cas_conflicts >= 1 and store.counters.retries >= 1
    assert store.counters.writes == 1


def test_status_reports_counters_and_fingerprint(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    repo_of(config).notify("feature", feat("A", 1))
    assert store.flush(2.0)
    status = store.status()
    assert status["fingerprint"] == fs.fingerprint([feat("A", 1)])
    assert status["counters"]["writes"] == 1 and status["healthy"]
    json.dumps(status)  # status must be JSON-serialisable for the CLI and health checks


def test_close_is_idempotent_and_detaches(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    store.close()
    store.close()
    assert store not in repo_of(config).raw_update_listeners
    assert store._thread is not None and not store._thread.is_alive()


def test_close_flushes_pending_updates(make_store: StoreFactory) -> None:
    config = make_config()
    store = make_store(config)
    repo_of(config).notify("feature", feat("LAST", 1))
    store.close(flush_timeout=2.0)
    assert stored(store) == {"id-LAST": 1}


@pytest.mark.parametrize("junk", [
    b"not json at all",
    b'{"an": "object"}',
    b"[1, 2, 3]",
    b'[{"id": "x", "key": "X", "version": "7"}, {"key": "Y"}]',
    b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00.",  # pickled bytes: never loaded
])
def test_junk_in_the_store_is_skipped_and_repaired_by_next_write(
        make_store: StoreFactory, junk: bytes, caplog: pytest.LogCaptureFixture) -> None:
    writer_config = make_config()
    writer = make_store(writer_config)
    _force_value(writer, junk)
    with caplog.at_level(logging.WARNING, logger="fh_prefork"):
        config = make_config()
        store = make_store(config)
    assert "unusable data in" in caplog.text
    assert not repo_of(config).features or all(
        f.get_version >= 0 for f in repo_of(config).features.values())
    repo_of(config).notify("feature", feat("GOOD", 1))
    assert store.flush(2.0)
    assert stored(store) == {"id-GOOD": 1}


def test_oversized_merge_is_logged_and_kept_in_memory(
        make_store: StoreFactory, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config()
    store = make_store(config, max_item_bytes=2_000)
    big = [feat(f"F{i:03}", 1, "x" * 100) for i in range(40)]
    with caplog.at_level(logging.ERROR, logger="fh_prefork"):
        repo_of(config).notify("features", big)
        assert not store.flush(1.0)
    assert "over the 2000-byte item limit" in caplog.text
    assert repo_of(config).feature("F039").get_version == 1  # still served from memory
    assert stored(store) == {}


def _force_value(store: SessionStore, value: bytes) -> None:
    """Write raw bytes under the data key, whatever is there (test-only back door)."""
    backend = peek(store)
    snapshot = backend.read()
    assert backend.write(value, "junk", snapshot) is not None


@pytest.mark.parametrize("junk", [
    b'[{"id": "id-A", "key": "A", "version": 1, "l": false}, {"id": "id-B", "version": "x"}]',
    b"garbage",
    b"[]",
])
def test_junk_never_deletes_flags_and_is_rewritten_from_memory(
        make_store: StoreFactory, junk: bytes) -> None:
    """Found by the fault suite: a dropped entry looked like a deletion by another process."""
    config = make_config()
    store = make_store(config, refresh_timeout=0.05)
    repo_of(config).notify("features", [feat("A", 1), feat("B", 1)])
    assert store.flush(2.0)
    _force_value(store, junk)
    # even a clean, empty array deletes nothing: only tombstones do (absence is not deletion)
    wait_for(lambda: stored(store) == {"id-A": 1, "id-B": 1}, 3, what="store rewritten")
    assert repo_of(config).feature("B").get_version == 1
    assert repo_of(config).feature("A").get_version == 1


def test_close_never_closes_the_client_under_a_thread_stuck_in_a_call(
        make_store: StoreFactory) -> None:
    """A store thread blocked in a backend call keeps its client until the call returns."""
    import threading as _threading

    store = make_store()
    entered, release = _threading.Event(), _threading.Event()
    backend: Any = store._backend
    real_read, real_close = backend.read, backend.close
    closed_while_stuck: list[bool] = []

    def stuck_read() -> Any:
        entered.set()
        release.wait(10)
        return real_read()

    def close() -> None:
        closed_while_stuck.append(not release.is_set())
        real_close()

    backend.read, backend.close = stuck_read, close
    store.STOP_GRACE = 0.2                    # close gives up on the thread sooner
    assert store.refresh(0.01) is False       # the thread is now inside stuck_read
    assert entered.wait(5)
    closers = [_threading.Thread(target=store.close, kwargs={"flush_timeout": 0.1})
               for _ in range(3)]
    for t in closers:
        t.start()
    for t in closers:
        t.join(10)
    assert closed_while_stuck == [], "the backend was closed under the store thread"
    release.set()
    assert store._thread is not None
    store._thread.join(5)
    assert closed_while_stuck == [False], "closed once, by the store thread, after the call"


def test_a_task_failing_every_tick_logs_once_and_says_when_it_works_again(
        make_store: StoreFactory, caplog: pytest.LogCaptureFixture) -> None:
    """A workers folder gone or a metrics folder missing fails every period, forever:
    one traceback, not one per worker per second."""
    store = make_store(make_config(), refresh_timeout=0.02)
    broken = [True]

    def task() -> float:
        if broken[0]:
            raise OSError("no space left on device")
        return 0.02

    store.add_task(task, name="probe")
    wait_for(lambda: store.counters.errors >= 10, 5, what="ten failed runs")
    failed = [r for r in caplog.records if "store task probe failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None, failed
    broken[0] = False
    wait_for(lambda: any("store task probe works again" in r.getMessage()
                         for r in caplog.records), 5, what="the recovery line")


def test_a_conflict_storm_at_exit_ends_with_the_flush_time(make_store: StoreFactory) -> None:
    """A write that loses every compare-and-set retries up to 64 times with backoff; at exit
    the thread stops racing once close's flush time is up, so the lease release and the
    backend's close still happen on it."""
    config = make_config()
    store = make_store(config, backoff_timeout=100)   # up to 0.8 s between attempts
    backend: Any = store._backend
    backend.write = lambda *args: None                 # every write loses the race
    repo_of(config).notify("feature", feat("A", 1))
    wait_for(lambda: store.counters.cas_conflicts >= 2, 5, what="the storm under way")
    store.close(flush_timeout=0.3)
    assert store._thread is not None
    store._thread.join(1.5)   # one backoff sleep at most, then the closed check
    assert not store._thread.is_alive(), "the thread kept racing after close"


def test_a_masters_store_checks_the_fingerprint_and_keeps_nothing_of_the_value(
        make_store: StoreFactory, memory_medium: Any) -> None:
    """``start=False`` (a prefork master: replay once, close at once) has no store thread to
    leave the start's fingerprint check and entry-text pass to: it does the check itself,
    as it did before the check was deferred, and holds no reference to the value it read
    (a dormant master keeps its store for its whole life)."""
    from fh_prefork.testing.memory import memory_store

    writer_config = make_config()
    writer = make_store(writer_config)
    repo_of(writer_config).notify("features", [feat("A", 2), feat("B", 1)])
    assert writer.flush(2.0)
    master = memory_store(memory_medium, make_config(), {"prefix": writer.options.prefix},
                          start=False)
    assert master.status()["fingerprint"] == fs.fingerprint([feat("A", 2), feat("B", 1)])
    assert master._fingerprint_due is None and master._texts_due is None, \
        "a closed store holds the start's snapshot and value for nothing"


def test_a_store_whose_thread_cannot_start_says_so_and_still_closes_its_backend(
        memory_medium: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The store thread is launched, not started (fh_prefork.threads): when no thread can be
    made at that moment, the constructor has returned already. The store must then say it
    is not healthy, and its close must close the backend, which the thread would have."""
    import threading

    from fh_prefork.testing.memory import MemoryBackend, memory_store

    start = threading.Thread.start

    def refuse_the_store_thread(thread: threading.Thread) -> None:
        if thread.name.startswith("fh-prefork-"):
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_the_store_thread)
    with caplog.at_level(logging.ERROR, logger="fh_prefork"):
        config = make_config()
        store = memory_store(memory_medium, config)
        wait_for(lambda: not store.status()["healthy"], 5, what="the failed start to show")
    status = store.status()
    assert status["state_problem"] and "thread could not start" in status["state_problem"]
    assert any("could not start thread fh-prefork-" in r.getMessage() for r in caplog.records)
    repo_of(config).notify("features", [feat("A", 1)])     # something to write
    waited = time.monotonic()
    assert not store.flush(5), "nothing will be written"
    store.close(flush_timeout=5)
    assert time.monotonic() - waited < 2.5, "flush and close waited for a thread that is not"
    backend = store._backend
    assert isinstance(backend, MemoryBackend) and backend._closed, \
        "closed by close(), since no store thread will"


def test_a_close_that_gave_up_on_a_slow_launch_still_has_the_backend_closed(
        memory_medium: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The launch is slow (a host out of threads), close() stops waiting for it, then the
    start fails: the backend must still be closed, once, though no store thread ever ran."""
    import threading

    from fh_prefork.testing.memory import MemoryBackend, memory_store

    start = threading.Thread.start
    refuse = threading.Event()

    def slow_then_refused(thread: threading.Thread) -> None:
        if thread.name.startswith("fh-prefork-"):
            refuse.wait(10)
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", slow_then_refused)
    store = memory_store(memory_medium, make_config())
    backend = store._backend
    assert isinstance(backend, MemoryBackend)
    closes: list[bool] = []
    close = backend.close

    def counted_close() -> None:
        closes.append(True)
        close()

    monkeypatch.setattr(backend, "close", counted_close)
    store.STOP_GRACE = 0.05
    store.close(flush_timeout=0)
    assert not backend._closed, "the launch is still under way"
    refuse.set()
    wait_for(lambda: backend._closed, 5, what="the backend closed after the failed start")
    assert closes == [True]

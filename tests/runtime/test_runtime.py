"""One process's lifecycle: lazy start, hooks, forks seen and unseen, dormant master."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fh_prefork
from fh_prefork import runtime
from fh_prefork.settings import SettingsError
from fh_prefork.testing.edge_simulator import EdgeSimulator, make_feature
from tests.support.edge import serve_edge
from tests.support.procs import wait_for
from tests.support.runtime import isolated_runtime, worker_status

API_KEY = "portfolio/env-rt/client*secret"


@pytest.fixture
def edge() -> Iterator[EdgeSimulator]:
    yield from serve_edge([make_feature("FLAG", True, 1)], keepalive_interval=0.5)


@pytest.fixture(autouse=True)
def fresh_runtime(edge: EdgeSimulator, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with isolated_runtime(monkeypatch, edge.url, API_KEY, tmp_path):
        yield


def flag_version() -> int:
    return int(fh_prefork.context().feature("FLAG").get_version)


def test_config_starts_lazily_and_is_the_same_object(edge: EdgeSimulator) -> None:
    cfg = fh_prefork.config()
    assert fh_prefork.config() is cfg
    wait_for(lambda: flag_version() == 1, 5, what="flags from Edge")
    status = worker_status()
    assert status["pid"] == os.getpid() and status["role"] == "worker"
    wait_for(lambda: worker_status()["edge_state"] == "connected", 5, what="connected")
    store = status["store"]
    assert store is not None and store["backend"].startswith("file://")
    json.dumps(fh_prefork.status())


def test_context_reads_cost_no_io(edge: EdgeSimulator) -> None:
    wait_for(lambda: flag_version() == 1, 5, what="flags")
    edge.go_down()  # nothing to talk to: reads must still answer from memory
    for _ in range(1000):
        assert fh_prefork.context().user_key("u").feature("FLAG").is_enabled


def test_stop_worker_closes_edge_and_store(edge: EdgeSimulator) -> None:
    fh_prefork.start_worker()
    assert edge.wait_for_streams(1, 5)
    worker = runtime.current_worker()
    assert worker is not None and worker.store is not None
    fh_prefork.stop_worker()
    assert edge.wait_until(lambda: edge.open_streams == 0, 5)
    assert worker.store._thread is not None and not worker.store._thread.is_alive()
    assert runtime.current_worker() is None
    assert fh_prefork.config() is not worker.config  # starts again, fresh


def test_a_worker_interrupted_while_starting_stops_what_it_started(
        edge: EdgeSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or any error) in the post-fork hook after the store and Edge started: both
    stop, so the interrupted process leaves no thread or stream behind."""
    before = set(threading.enumerate())

    def interrupted(*args: Any) -> None:
        assert edge.wait_for_streams(1, 5)       # Edge and the store are running by now
        raise KeyboardInterrupt

    monkeypatch.setattr("fh_prefork.status_records.Publisher", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fh_prefork.start_worker()
    assert runtime.current_worker() is None
    assert edge.wait_until(lambda: edge.open_streams == 0, 5)
    wait_for(lambda: not (set(threading.enumerate()) - before), 5,
             what="no thread left from the interrupted start")


def test_a_store_password_reaches_neither_the_start_line_nor_status(
        edge: EdgeSimulator, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    from fh_prefork.testing.cluster import free_port

    fh_prefork.configure(store=f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.DEBUG, logger="fh_prefork"):
        fh_prefork.start_worker()
        status = json.dumps(fh_prefork.status())
    assert "worker" in caplog.text and "started by" in caplog.text
    assert ":***@" in caplog.text          # the start line names the store, redacted
    assert "s3cret-pw" not in caplog.text and "s3cret-pw" not in status


def test_store_none_keeps_the_lifecycle_without_shared_state(edge: EdgeSimulator) -> None:
    fh_prefork.configure(store="none")
    wait_for(lambda: flag_version() == 1, 5, what="flags from Edge only")
    status = worker_status()
    assert status["store"] is None and status["store_url"] == "none"


def test_configure_validates_at_once_and_keeps_old_settings_on_error() -> None:
    fh_prefork.configure(prefix="good")
    with pytest.raises(SettingsError, match="FH_PREFORK_REFRESH_SECONDS|refresh_seconds"):
        fh_prefork.configure(refresh_seconds=-1)
    assert runtime.settings().prefix == "good"
    assert runtime.settings().refresh_seconds == 0.2


def _child(report_fd: int, body: Any) -> None:
    """Run ``body`` in a forked child, report JSON through a pipe, never return."""
    try:
        result = body()
    except BaseException as err:  # report everything: the child must not run pytest on
        result = {"error": repr(err)}
    os.write(report_fd, json.dumps(result).encode())
    os._exit(0)


def _all_logging_locks() -> list[Any]:
    handlers = {h for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                if isinstance(lg, logging.Logger) for h in lg.handlers}
    return [h.lock for h in handlers if h.lock is not None]


def _fork_and_report(body: Any, raw: bool = False, timeout: float = 20.0) -> dict[str, Any]:
    """Fork, run ``body`` in the child, return what it reported; the child is killed if late.

    A raw libc fork (what uWSGI does without py-call-uwsgi-fork-hooks) skips Python's at-fork
    handlers, including logging's: hold the logging handler locks across it, as logging's own
    handler would, so the child cannot inherit one held by another thread mid-log.
    """
    read_fd, write_fd = os.pipe()
    # threading's own lock for starting threads too: the child starts its store and Edge
    # threads, and an inherited held one (a parent thread starting or ending) blocks them
    locks = [*_all_logging_locks(), threading._active_limbo_lock] if raw else []  # type: ignore[attr-defined]
    for lock in locks:
        lock.acquire()
    try:
        # PyDLL keeps the GIL across the call: with CDLL another thread can take the GIL
        # while fork() runs, and the child then waits forever for a GIL its dead owner holds
        pid = ctypes.PyDLL(None).fork() if raw else os.fork()
    finally:
        for lock in locks:
            lock.release()
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, body)
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = pipe.read(65536)
            if not chunk:
                break
            data += chunk
    exited = os.pidfd_open(pid)  # readable once the child has exited
    try:
        select.select([exited], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(exited)
    finished, status = os.waitpid(pid, os.WNOHANG)
    if not finished:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"forked child did not finish within {timeout} s")
    assert os.WIFEXITED(status), status
    return dict(json.loads(data or b"{}"))


@pytest.mark.parametrize("raw", [False], ids=["os.fork"])
def test_fork_no_hook_saw_starts_fresh_in_the_child_and_logs_once(
        edge: EdgeSimulator, raw: bool) -> None:
    parent_cfg = fh_prefork.config()
    assert edge.wait_for_streams(1, 5)
    wait_for(lambda: flag_version() == 1, 5, what="parent flags")

    def in_child() -> dict[str, Any]:
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("fh_prefork").addHandler(handler)
        cfg = fh_prefork.config()
        again = fh_prefork.config()
        version = wait_for(lambda: flag_version() == 1 and 1, 5, what="child flags")
        edge_up = wait_for(lambda: worker_status()["edge_state"] == "connected", 5,
                           what="child edge")
        fh_prefork.stop_worker()
        return {"new": cfg is not parent_cfg, "same": cfg is again, "version": version,
                "edge": edge_up, "logs": [m for m in records if "forked" in m],
                "pid": os.getpid()}

    child = _fork_and_report(in_child, raw=raw)
    assert "error" not in child, child
    assert child["new"] and child["same"] and child["version"] == 1 and child["edge"]
    assert len(child["logs"]) == 1 and str(os.getpid()) in child["logs"][0], child["logs"]
    # the parent's connection survived the child: still its one stream, still served
    assert fh_prefork.config() is parent_cfg
    assert worker_status()["edge_state"] == "connected"
    edge.push_feature(make_feature("FLAG", False, 2))
    wait_for(lambda: flag_version() == 2, 5, what="parent still receives updates")


def test_master_is_dormant_and_its_children_start_workers(edge: EdgeSimulator) -> None:
    fh_prefork.start_worker()  # someone already wrote the store
    wait_for(lambda: flag_version() == 1, 5, what="flags")
    store = worker_status()["store"]
    assert (store is not None and store["pending"] == 0) or runtime.current_worker()
    runtime.current_worker().store.flush(2)  # type: ignore[union-attr]
    fh_prefork.stop_worker()
    runtime.mark_master()
    threads = set(threading.enumerate())   # the in-process simulator's threads come and go
    streams = edge.total_stream_connections
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        started.append(self.name)
        real_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    try:
        assert flag_version() == 1, "the master reads the store once"
    finally:
        threading.Thread.start = real_start  # type: ignore[method-assign]
    assert started == [], "not even briefly: a thread alive at the fork is inherited half-done"
    assert worker_status()["role"] == "master"
    assert not set(threading.enumerate()) - threads, "the master keeps no thread"
    assert edge.total_stream_connections == streams, "the master never connects to Edge"

    def in_child() -> dict[str, Any]:
        fh_prefork.start_worker()
        role = worker_status()["role"]
        up = wait_for(lambda: worker_status()["edge_state"] == "connected", 5, what="edge")
        fh_prefork.stop_worker()
        return {"role": role, "edge": up}

    child = _fork_and_report(in_child)
    assert child == {"role": "worker", "edge": True}, child


RAW_FORK_PARENT = r"""
import ctypes, json, os, sys, time
import fh_prefork
from fh_prefork import runtime

runtime.mark_master()                 # a uWSGI master: dormant, no thread, one store read
parent_cfg = fh_prefork.config()
parent_repo = parent_cfg.repository()
pid = ctypes.PyDLL(None).fork()       # no at-fork hook runs: what uWSGI does without
if pid == 0:                          # py-call-uwsgi-fork-hooks (and without our hook)
    out = {"pid": os.getpid()}
    first = sys.argv[1]
    if first == "context":            # the hot path notices at the first read
        for n in range(1, 2 * runtime.PID_CHECK_EVERY + 1):
            fh_prefork.context().feature("FLAG")
            if runtime.current_worker() is not None:
                out["reads"] = n
                break
    cfg = fh_prefork.config()
    own = runtime.current_worker()
    out["new"] = cfg is not parent_cfg and own is not None and own.repository is not parent_repo
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and fh_prefork.context().feature("FLAG").get_version != 1:
        time.sleep(0.02)
    out["version"] = fh_prefork.context().feature("FLAG").get_version
    out["role"] = fh_prefork.status()["role"]
    fh_prefork.stop_worker()
    print(json.dumps(out), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("first", ["config", "context"])
def test_raw_fork_from_a_dormant_master_starts_a_fresh_worker(first: str) -> None:
    """The child of a fork no hook saw gets its own runtime at its first config() or
    context(): a copy of a dormant master's runtime is never served, not even for the
    PID_CHECK_EVERY reads a copy of a worker's may be. The parent is a separate process that is
    single-threaded when it forks, as a prefork master is: a raw fork of a process whose
    other threads hold the GIL's or threading's internal locks can hang the child whatever
    the library does."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", RAW_FORK_PARENT, first], capture_output=True,
                         text=True, timeout=60, env=os.environ.copy())
    assert run.returncode == 0, run.stderr
    child = json.loads(run.stdout.strip().splitlines()[-1])
    assert child["new"] and child["version"] == 1 and child["role"] == "worker", child
    if first == "context":
        assert child["reads"] == 1, child


def test_a_follower_gives_a_new_leader_time_to_fill_an_empty_store(
        edge: EdgeSimulator, memcached: Any, prefix: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A new leader's first moments look like an empty store (its Edge connect, its write).
    A follower that fell back after one period, as before, opened a second Edge stream at
    most cold starts against an Edge a second away; it now waits a period plus
    NEW_LEADER_SECONDS, and still falls back when the store stays empty."""
    from fh_prefork.leader import NEW_LEADER_SECONDS
    from fh_prefork.store.core import NO_STATE
    from fh_prefork.store.lease import Lease
    from fh_prefork.store.memcache import MemcacheBackend, make_client, parse_servers
    from fh_prefork.store.options import MemcacheSessionStoreOptions

    refresh = 0.3
    other = MemcacheBackend(make_client(parse_servers(memcached.url),
                                        MemcacheSessionStoreOptions()),
                            f"{prefix}_env-rt", "another host")
    try:   # a leader elsewhere that holds the lease and has written nothing yet
        assert other.lease_acquire(Lease("elsewhere:1:x", "elsewhere", 1, time.time() + 60),
                                   60).held
        for name, value in {"FH_PREFORK_STORE": memcached.url, "FH_PREFORK_PREFIX": prefix,
                            "FH_PREFORK_EDGE_MODE": "leader",
                            "FH_PREFORK_REFRESH_SECONDS": str(refresh)}.items():
            monkeypatch.setenv(name, value)
        started = time.monotonic()   # before the first read: the store's problem is younger
        fh_prefork.start_worker()
        roles = []
        # past 2.2 periods: the old one-period rule had fallen back by then, whatever the
        # jitter; well short of the grace, so load (which only delays a check) cannot fail it
        while time.monotonic() - started < refresh + NEW_LEADER_SECONDS / 2:
            roles.append(worker_status()["role"])
            time.sleep(0.02)
        assert set(roles) == {"follower"}, roles
        assert edge.total_stream_connections == 0
        status = wait_for(lambda: (s := worker_status())["role"] == "fallback" and s, 5,
                          what="the fallback once the store stays empty")
        election = status["election"]
        assert election is not None and election["fallback_reason"] == NO_STATE, election
        wait_for(lambda: edge.total_stream_connections >= 1, 5,
                 what="the fallback's own Edge connection")
    finally:
        other.close()

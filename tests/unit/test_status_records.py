"""Status records of a whole server: one private file per worker, written by its store thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fh_prefork import status_records
from fh_prefork.runtime import WorkerStatus


def test_a_worker_that_exits_before_its_first_step_removes_nothing_and_does_not_raise(
        tmp_path: Path) -> None:
    def status() -> WorkerStatus:
        raise AssertionError("no step ran: the status is never asked")

    publisher = status_records.Publisher(status, os.getppid(), base=tmp_path)
    publisher.remove()        # worker_exit before the store thread ran: no record, no error
    assert not (tmp_path / "workers").exists()


def test_dead_workers_records_are_swept_and_a_master_removes_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    folder = status_records.records_folder(os.getppid(), tmp_path)
    folder.mkdir(parents=True)
    (folder / f"{child.pid}.json").write_text("{}")
    (folder / f"{os.getpid()}.json").write_text("{}")
    assert status_records.sweep_records(folder) == [child.pid]
    assert sorted(p.name for p in folder.iterdir()) == [f"{os.getpid()}.json"]


def test_ticker_runs_tasks_without_a_store_and_stops() -> None:
    import threading
    import time

    ran: list[str] = []
    done = threading.Event()

    def task() -> float:
        ran.append(threading.current_thread().name)
        if len(ran) >= 3:
            done.set()
        return 0.05

    def broken() -> float:
        raise RuntimeError("a task that fails does not stop the others")

    ticker = status_records.run_tasks(None, [(broken, "broken"), (task, "probe")])
    assert ticker is not None
    assert done.wait(10)
    ticker.close()
    count = len(ran)
    time.sleep(0.2)
    assert len(ran) == count and set(ran) == {"fh-prefork-ticker"}


def test_gunicorn_child_exit_drops_a_dead_workers_gauges_and_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the master does for a worker that died without its worker_exit (SIGKILL)."""
    from types import SimpleNamespace

    pytest.importorskip("prometheus_client")
    import fh_prefork.prometheus  # noqa: F401  # imported with the runtime in a real master
    from fh_prefork import gunicorn

    dead = 4194000          # above any pid this test's machine hands out soon
    prom, runtime = tmp_path / "prom", tmp_path / "run"
    prom.mkdir()
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(prom))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    (prom / f"gauge_liveall_{dead}.db").write_bytes(b"")
    (prom / f"counter_{dead}.db").write_bytes(b"")
    folder = status_records.records_folder(os.getpid(), runtime / "fh-prefork")
    folder.mkdir(parents=True)
    (folder / f"{dead}.json").write_text("{}")
    gunicorn.child_exit(SimpleNamespace(), SimpleNamespace(pid=dead))
    assert sorted(p.name for p in prom.iterdir()) == [f"counter_{dead}.db"]
    assert list(folder.iterdir()) == []

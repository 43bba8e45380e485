"""Status records of a whole server: one private file per worker, written by its store thread."""

from __future__ import annotations

import os
from pathlib import Path

from fh_prefork import workers


def test_a_worker_that_exits_before_its_first_step_removes_nothing_and_does_not_raise(
        tmp_path: Path) -> None:
    publisher = workers.Publisher(lambda: {}, os.getppid(), base=tmp_path)
    publisher.remove()        # worker_exit before the store thread ran: no record, no error
    assert not (tmp_path / "workers").exists()


def test_dead_workers_records_are_swept_and_a_master_removes_one(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    folder = workers.records_folder(os.getppid(), tmp_path)
    folder.mkdir(parents=True)
    (folder / f"{child.pid}.json").write_text("{}")
    (folder / f"{os.getpid()}.json").write_text("{}")
    assert workers.sweep_records(folder) == [child.pid]
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

    ticker = workers.run_tasks(None, [(broken, "broken"), (task, "probe")])
    assert ticker is not None
    assert done.wait(10)
    ticker.close()
    count = len(ran)
    time.sleep(0.2)
    assert len(ran) == count and set(ran) == {"fh-prefork-ticker"}

"""Each worker's status record on disk, so one command can see a whole server at once.

A worker cannot be asked directly (it has no control socket, and an HTTP
request reaches whichever worker accepts it), so every worker writes a small
JSON record of its state once a second under
``{runtime folder}/workers/{master pid}/{pid}.json`` (private: folder 0700,
files 0600, replaced atomically) and removes it at exit. ``fh-prefork status
--server PID`` reads the records of the master's live children.

A worker that could not remove its record (SIGKILL, the OOM killer) leaves
it behind: gunicorn's ``child_exit`` hook removes it in the master
(:func:`remove_record`), and every worker sweeps its folder for dead workers'
records at its first step and every ``SWEEP_EVERY`` steps after.

The records (and the metrics, see :mod:`fh_prefork.prometheus`) do not wait
on a store: with one they run as tasks on its thread, without one (store
``none``, or a store that failed to open) on a :class:`Ticker` of their own.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import psutil

from .threads import launch_without_signals, wait_for_end

if TYPE_CHECKING:   # the runtime imports this module: its types only, for the checker
    from .runtime import WorkerStatus

PERIOD = 1.0
#: Steps between two sweeps of the records folder for dead workers' records.
SWEEP_EVERY = 10

log = logging.getLogger("fh_prefork")

#: A periodic task: returns the seconds until its next run.
Task = Callable[[], float]


def records_folder(master_pid: int, base: Path | None = None) -> Path:
    if base is None:
        from .store.file import default_directory

        base = default_directory()
    return base / "workers" / str(master_pid)


def _private_folder(folder: Path) -> bool:
    """Create the folder (and its parents) private; False if it is not ours or not private."""
    old = os.umask(0o077)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    st = os.stat(folder, follow_symlinks=False)
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & 0o077)


class StatusRecord(TypedDict):
    """One worker's record on disk: what ``fh-prefork status --server`` compares."""

    pid: int
    master_pid: int | None
    role: str
    edge_state: str
    last_refresh: float | None
    fingerprint: str | None
    features: int
    store: str
    environment_id: str | None
    prefix: str | None
    store_healthy: bool | None
    pending: int | None
    state_problem: str | None
    written_at: float


def record_of(s: WorkerStatus) -> StatusRecord:
    """The record of a worker's status: the few keys the CLI reads, flat."""
    store = s["store"]
    return {"pid": s["pid"], "master_pid": s["master_pid"], "role": s["role"],
            "edge_state": s["edge_state"], "last_refresh": s["last_refresh"],
            "fingerprint": s["fingerprint"], "features": s["features"],
            "store": s["store_url"],
            "environment_id": store["environment_id"] if store else None,
            "prefix": s["settings"].get("prefix"),
            "store_healthy": store["healthy"] if store else None,
            "pending": store["pending"] if store else None,
            "state_problem": store["state_problem"] if store else None,
            "written_at": time.time()}


class Publisher:
    """Writes one worker's record; ``step`` runs on its store thread."""

    def __init__(self, status: Callable[[], WorkerStatus], master_pid: int,
                 base: Path | None = None) -> None:
        self._status = status     # the worker's status()
        self._master_pid, self._base = master_pid, base
        self._usable: bool | None = None
        self.path: Path | None = None    # known once the store thread's first step ran
        self._steps = 0

    def step(self) -> float:
        if self._usable is None:   # here, on the store thread: no folder work in post_fork
            try:
                folder = records_folder(self._master_pid, self._base)
                self._usable = _private_folder(folder)
                self.path = folder / f"{os.getpid()}.json"
            except OSError:
                self._usable = False
        if not self._usable or self.path is None:
            return 3600.0   # someone else's or an open folder: publish nothing there
        if self._steps % SWEEP_EVERY == 0:
            sweep_records(self.path.parent)
        self._steps += 1
        record = record_of(self._status())
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, default=str)
        os.replace(tmp, self.path)
        return PERIOD

    def remove(self) -> None:
        """Delete this worker's record; a worker that exits before its first step has none."""
        if self.path is None:
            return
        try:
            self.path.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def sweep_records(folder: Path) -> list[int]:
    """Remove the records of dead workers from ``folder``; their pids."""
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return []
    dead = sorted(int(n[:-5]) for n in names
                  if n.endswith(".json") and n[:-5].isdigit() and not _alive(int(n[:-5])))
    for pid in dead:
        try:
            (folder / f"{pid}.json").unlink()
        except OSError:
            pass    # another worker's sweep got there first
    return dead


def remove_record(master_pid: int, pid: int) -> bool:
    """In a master whose worker ``pid`` died: delete its record. Only finds (never creates)
    the folder, so it is safe in a prefork master. True when a record was removed."""
    # the master's own environment as it is now (gunicorn's raw_env may have changed it
    # since start, which /proc shows), as its workers inherited it
    folder = _find_folder(master_pid, os.environ.get("XDG_RUNTIME_DIR"), os.geteuid())
    if folder is None:
        return False
    try:
        (folder / f"{pid}.json").unlink()
    except OSError:
        return False
    return True


def forget(pid: int, master_pid: int) -> None:
    """A master's clean-up after its worker ``pid`` exited, however it exited: its status
    record and (with prometheus_client, in multiprocess mode) its live gauges go."""
    remove_record(master_pid, pid)
    metrics = sys.modules.get("fh_prefork.prometheus")   # imported with the runtime, if at all
    if metrics is not None:
        metrics.mark_dead(pid)


class Ticker:
    """Runs periodic tasks on a thread of its own: a worker's status record and metrics
    when it has no store thread to run them (store ``none``, or one that failed to open)."""

    def __init__(self, tasks: Sequence[tuple[Task, str]]) -> None:
        self._tasks = list(tasks)
        self._due = [0.0] * len(self._tasks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fh-prefork-ticker",
                                        daemon=True)

    def start(self) -> Ticker:
        launch_without_signals(self._thread)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for i, (task, name) in enumerate(self._tasks):
                if now < self._due[i]:
                    continue
                try:
                    wait = float(task())
                except Exception:   # a task must not end the others
                    log.exception("fh_prefork: worker %d: %s failed", os.getpid(), name)
                    wait = PERIOD
                self._due[i] = now + max(0.05, wait)
            self._stop.wait(max(0.05, min(self._due) - time.monotonic()))

    def close(self, timeout: float = 1.0) -> None:
        self._stop.set()
        wait_for_end(self._thread, timeout)


def run_tasks(store: Any, tasks: Sequence[tuple[Task, str]]) -> Ticker | None:
    """Run ``tasks`` on ``store``'s thread, or on a new :class:`Ticker` when there is no
    store (returned, to be closed with the worker)."""
    if not tasks:
        return None
    if store is not None:
        for task, name in tasks:
            store.add_task(task, name=name)
        return None
    return Ticker(tasks).start()


def server_folder(master_pid: int) -> Path | None:
    """Where ``master_pid``'s workers write their records, found as they would find it.

    The folder follows the server's environment and user, not the caller's:
    ``$XDG_RUNTIME_DIR`` as the master has it, the master's uid, and the
    private folder a worker falls back to when the usual one was taken.
    Nothing is created. None when no such folder exists (or the master's
    environment cannot be read, e.g. another user's server without root).
    """
    try:
        master = psutil.Process(master_pid)
        uid = master.uids().effective
        runtime = master.environ().get("XDG_RUNTIME_DIR")
    except psutil.Error:
        return None
    return _find_folder(master_pid, runtime, uid)


def _find_folder(master_pid: int, runtime: str | None, uid: int) -> Path | None:
    """``master_pid``'s records folder under the usual places for ``runtime`` and ``uid``."""
    usual = [Path(runtime) / "fh-prefork"] if runtime else []
    usual += [Path("/dev/shm") / f"fh-prefork-{uid}",
              Path(tempfile.gettempdir()) / f"fh-prefork-{uid}"]
    for folder in usual:
        try:
            beside = sorted(p for p in folder.parent.iterdir()
                            if p.name.startswith(f"{folder.name}-"))
        except OSError:
            beside = []
        for candidate in (folder, *beside):
            if records_folder(master_pid, candidate).is_dir():
                return records_folder(master_pid, candidate)
    return None


def read_server(master_pid: int, base: Path | None = None
                ) -> tuple[list[dict[str, Any]], list[int]]:
    """The records of ``master_pid``'s live workers, by pid, and the live children that have
    none (a worker where fh_prefork has not started, or a child that is no worker at all,
    such as uWSGI's HTTP router). A dead worker's record is skipped."""
    try:
        live = {c.pid for c in psutil.Process(master_pid).children()
                if c.status() != psutil.STATUS_ZOMBIE}
    except psutil.Error:
        live = set()
    folder = records_folder(master_pid, base) if base is not None else server_folder(master_pid)
    records, silent = [], []
    for pid in sorted(live):
        try:
            if folder is None:
                raise FileNotFoundError(pid)
            records.append(json.loads((folder / f"{pid}.json").read_text()))
        except (OSError, ValueError):
            silent.append(pid)
    return records, silent

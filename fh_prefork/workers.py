"""Each worker's status record on disk, so one command can see a whole server at once.

A worker cannot be asked directly (it has no control socket, and an HTTP
request reaches whichever worker accepts it), so every worker writes a small
JSON record of its state once a second under
``{runtime folder}/workers/{master pid}/{pid}.json`` (private: folder 0700,
files 0600, replaced atomically) and removes it at exit. ``fh-prefork status
--server PID`` reads the records of the master's live children.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

PERIOD = 1.0


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


class Publisher:
    """Writes one worker's record; ``step`` runs on its store thread."""

    def __init__(self, status: Any, master_pid: int, base: Path | None = None) -> None:
        self._status = status     # () -> the worker's status() dict
        self._master_pid, self._base = master_pid, base
        self._usable: bool | None = None
        self.path: Path | None = None    # known once the store thread's first step ran

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
        s = self._status()
        store = s.get("store") or {}
        record = {"pid": s["pid"], "master_pid": s.get("master_pid"), "role": s["role"],
                  "edge_state": s.get("edge_state"), "last_refresh": s.get("last_refresh"),
                  "fingerprint": s.get("fingerprint"), "features": s.get("features"),
                  "store": s.get("store_url"), "environment_id": store.get("environment_id"),
                  "prefix": (s.get("settings") or {}).get("prefix"),
                  "store_healthy": store.get("healthy"), "pending": store.get("pending"),
                  "state_problem": store.get("state_problem"), "written_at": time.time()}
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

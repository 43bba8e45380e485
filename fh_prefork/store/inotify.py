"""Push for the embedded store: the kernel's file notifications (Linux inotify, via ctypes).

The standard library has no inotify binding, so this calls libc's
``inotify_init1`` and ``inotify_add_watch`` through :mod:`ctypes`. One thread per
store blocks in ``select`` on the inotify descriptor and a wake-up pipe: idle, it
costs nothing. A writer replaces the data file by ``rename`` (``IN_MOVED_TO``);
a deleted data file (``IN_DELETE``) wakes the store too, so it heals at once.

Elsewhere (no inotify in libc), :func:`watch_files` returns None and the store
polls as before. A queue overflow, or the folder's watch going away (the folder
removed and created again), asks for a full read once the watch is back.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..ratelog import RateLimitedLog
from ..threads import start_without_signals, wait_for_end
from .backend import PushStatus, Wake

#: the store's logger: what push does is part of what the store does
store_log = logging.getLogger("fh_prefork.store")

IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
#: Writers replace the data file by rename; an in-place write (no fh_prefork writer makes one)
#: is left to the safety poll, as is a chown or chmod.
MASK = IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
_EVENT = struct.Struct("iIII")   # wd, mask, cookie, len; then len bytes of NUL-padded name

_libc: Any = None
_libc_lock = threading.Lock()


def _inotify() -> Any:
    """libc with inotify, or None (not Linux, or a libc without it)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    with _libc_lock:
        if _libc is None:
            try:
                # the process's own symbols include libc's: no ldconfig run in each worker
                libc = ctypes.CDLL(None, use_errno=True)
                libc.inotify_init1.argtypes = [ctypes.c_int]
                libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
                _libc = libc
            except (OSError, AttributeError):
                _libc = False
        return _libc or None


class DirectoryWatch:
    """Calls ``wake(full)`` when one of ``names`` in ``directory`` is replaced or deleted."""

    RETRY = 1.0   # s between attempts to watch the folder again once its watch went away

    def __init__(self, libc: Any, directory: Path, names: Iterable[str], wake: Wake) -> None:
        self._libc = libc
        self._directory = os.fsencode(directory)
        self._names = {os.fsencode(n) for n in names}
        self._wake = wake
        self._fd = -1
        self._wd = -1
        self._pipe_r, self._pipe_w = -1, -1
        self._stop = threading.Event()
        self._log = RateLimitedLog(store_log)
        self.events = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="fh-prefork-inotify",
                                        daemon=True)

    def start(self) -> None:
        fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd
        try:
            self._add_watch()
            self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._close_fds()
            raise
        start_without_signals(self._thread)
        self._wake(False)   # a write between the store's first read and the watch: a cheap check

    def _add_watch(self) -> None:
        wd = self._libc.inotify_add_watch(self._fd, self._directory, MASK | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {os.fsdecode(self._directory)}: "
                               f"{os.strerror(err)}")
        self._wd = wd

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                timeout = None if self._wd >= 0 else self.RETRY
                ready, _, _ = select.select([self._fd, self._pipe_r], [], [], timeout)
                if self._stop.is_set() or self._pipe_r in ready:
                    return
                if self._wd < 0:
                    try:
                        self._add_watch()
                    except OSError as err:
                        self.last_error = str(err)
                        self._log.failure("fh_prefork: no change notifications for %s (%s); "
                                          "the store polls at its refresh period",
                                          os.fsdecode(self._directory), err)
                        continue
                    self._log.recovered("fh_prefork: change notifications for %s resumed",
                                        os.fsdecode(self._directory))
                    self._wake(True)   # the folder came back: what happened meanwhile is unseen
                if self._fd in ready:
                    self._drain()
        except Exception as err:  # never take the process down: the store still polls
            self.last_error = f"{type(err).__name__}: {err}"
            store_log.warning("fh_prefork: change notifications for %s stopped (%s); the store "
                              "polls at its refresh period", os.fsdecode(self._directory),
                              self.last_error)

    def _drain(self) -> None:
        try:
            buf = os.read(self._fd, 64 * 1024)
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EINTR):
                return
            raise
        changed = full = False
        offset = 0
        while offset + _EVENT.size <= len(buf):
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            name = buf[offset + _EVENT.size:offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                full = True
            elif mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                if wd == self._wd:
                    self._wd = -1          # the folder is gone: watch it again when it returns
                full = True
            elif name in self._names:
                changed = True
        if changed or full:
            self.events += 1
            self._wake(full)

    def close(self) -> None:
        self._stop.set()
        if self._pipe_w >= 0:
            try:
                os.write(self._pipe_w, b"x")
            except OSError:
                pass
        wait_for_end(self._thread, 1.0)
        if not self._thread.is_alive():
            self._close_fds()

    def status(self) -> PushStatus:
        return {"connected": self._wd >= 0 and self._thread.is_alive(), "reconnects": None,
                "events": self.events, "last_error": self.last_error}

    def _close_fds(self) -> None:
        for name in ("_fd", "_pipe_r", "_pipe_w"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)


def watch_files(directory: Path, names: Iterable[str], wake: Wake) -> DirectoryWatch | None:
    """A watch on ``names`` in ``directory``, or None where inotify is not available."""
    libc = _inotify()
    if libc is None:
        return None
    return DirectoryWatch(libc, directory, names, wake)

"""gunicorn server hooks: import them into ``gunicorn.conf.py``.

.. code-block:: python

    # gunicorn.conf.py
    from fh_prefork.gunicorn import child_exit, on_starting, post_fork, worker_exit
    workers = 8

Each hook has gunicorn's exact signature and only calls :mod:`fh_prefork.runtime`.
If you already define one of these hooks, call ours from yours.

* ``on_starting(server)``: in the master, before any worker: route
  fh_prefork's log records to gunicorn's error log (see :mod:`fh_prefork.serverlog`),
  validate the settings and the store location, and refuse to start with one
  line naming the variable; mark the process as the master (it never connects to Edge).
* ``on_reload(server)``: on SIGHUP, validate again so a bad edit is reported
  by the master, once, rather than by every new worker.
* ``post_fork(server, worker)``: in each new worker: its own config, store,
  refresh timer and Edge connection. Green workers (``-k gevent``, and an
  eventlet worker class) patch the standard library only later, in their
  ``init_process``: started here, the store and Edge would be native threads
  the hub knows nothing of (their exit prints ``KeyError`` tracebacks and
  stalls the worker's shutdown). For those the start waits until the worker
  has patched and loads the app (:mod:`fh_prefork.green`): both are greenlets.
  A stop signal that arrives while it runs is not lost: until the worker's own
  handlers are in place it would reach the master's, and the worker would be
  killed only after ``graceful_timeout``; it is sent again once they are.
* ``worker_exit(server, worker)``: in the exiting worker: close them, so it
  exits promptly.
* ``child_exit(server, worker)``: in the master, after a worker exited however
  it exited (SIGKILL and the OOM killer too, where ``worker_exit`` never ran):
  drop its Prometheus gauges (multiprocess mode) and its status record, so no
  dead worker shows as a live one. Only deletes files; without it the other
  workers' periodic sweep does the same, up to ``SWEEP_EVERY`` seconds later.

Importing this module in a gunicorn master (``gunicorn.conf.py`` is read
there, before ``--preload`` imports the app) marks the process as the master
at once, so flags read at import time never open a connection in it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from . import green, runtime, serverlog, status_records
from .settings import SettingsError

__all__ = ["child_exit", "on_reload", "on_starting", "post_fork", "worker_exit"]


def on_starting(server: Any) -> None:
    serverlog.route_to_gunicorn(server)
    runtime.mark_master()
    try:
        runtime.check()
    except SettingsError as err:
        serverlog.refuse(server, f"fh_prefork: refusing to start: {err}")


def on_reload(server: Any) -> None:
    serverlog.route_to_gunicorn(server)
    try:
        runtime.check()
    except SettingsError as err:
        server.log.error("fh_prefork: after reload: %s", err)


#: What a gunicorn master stops a worker with: gracefully (TERM) or at once (INT, QUIT).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def post_fork(server: Any, worker: Any) -> None:
    if green.defer_until_patched(worker, lambda: _start(server)):
        return  # started from the green worker's init_process, once it has patched
    _keep_stop_signals(worker)
    _start(server)


def _start(server: Any) -> None:
    serverlog.route_to_gunicorn(server)   # also when on_starting is the user's own
    runtime.start_worker(hooked="gunicorn post_fork")


def _keep_stop_signals(worker: Any) -> None:
    """Keep a stop signal that arrives before the worker's own handlers are in place.

    Until its ``init_process`` installs them, a new worker runs the master's handlers,
    which queue a signal for the master's loop: in the worker a stop is lost, and the
    master kills the worker only after ``graceful_timeout``. The store's read and Edge's
    start are most of that window (and whatever a ``post_fork`` of the application's
    does after calling ours). A stop met is sent again once ``init_signals`` has run:
    INT or QUIT (at once) if one came, else TERM (graceful). A green worker starts
    fh_prefork after that (see post_fork), and is left as it is.
    """
    init_signals = getattr(worker, "init_signals", None)
    if threading.current_thread() is not threading.main_thread() or not callable(init_signals):
        return      # not gunicorn's own call (only the main thread may set handlers)
    received: list[int] = []

    def keep(signum: int, frame: Any) -> None:
        received.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, keep)    # the master's, useless here; init_signals replaces them

    def init_signals_then_stop() -> None:
        init_signals()
        if received:
            urgent = [sig for sig in received if sig != signal.SIGTERM]
            os.kill(os.getpid(), urgent[0] if urgent else signal.SIGTERM)

    worker.init_signals = init_signals_then_stop


def worker_exit(server: Any, worker: Any) -> None:
    # gunicorn also calls this in the master for a worker that vanished: only act in the worker
    if getattr(worker, "pid", None) == os.getpid():
        runtime.stop_worker()


def child_exit(server: Any, worker: Any) -> None:
    pid = getattr(worker, "pid", None)
    if not isinstance(pid, int) or pid == os.getpid():
        return
    status_records.forget(pid, master_pid=os.getpid())


if "gunicorn.arbiter" in sys.modules:
    runtime.mark_master()

"""uWSGI integration: ``import fh_prefork.uwsgi`` in the app, or ``--import fh_prefork.uwsgi``.

What uWSGI 2.0.31 on CPython 3.11 does, found by the tests in ``tests/servers``:

* ``@postfork`` runs in every worker with ``--master``, but never with
  ``--lazy-apps`` (the app is imported in the worker, after the fork). So when
  this module is imported inside a worker it starts the worker at once.
* ``os.register_at_fork`` hooks do not run on uWSGI's fork unless
  ``py-call-uwsgi-fork-hooks`` is set. The runtime notices the pid change
  anyway; the option keeps other libraries' fork hooks working too.
* Python threads run with or without ``--enable-threads`` in 2.0.31 (the
  option is on by default there); older uWSGI stalls them, which
  ``uwsgi.has_threads`` reveals.
* ``uwsgi.atexit`` runs in every worker on every kind of exit, before Python
  finalisation waits for threads: the worker is closed there, so it exits at
  once instead of after ``worker-reload-mercy``.
* Until uWSGI installs a worker's own signal handlers, after the post-fork
  hooks, a worker forked at start raises SIGINT as ``KeyboardInterrupt`` (uWSGI
  prints it and the worker serves on) and ignores SIGHUP, and a respawned worker
  runs its copy of the master's C handlers: a stop or reload met then is lost
  until ``worker-reload-mercy``. While fh_prefork's hook runs, SIGINT and SIGHUP
  end the worker at once, as uWSGI's own handler would (exit code 30).
* uWSGI handles a worker's signals in C, in whichever thread receives them;
  SIGINT runs the exit hooks there. On one of the library's threads that hung
  the worker until ``worker-reload-mercy``, so those threads block every
  signal and the kernel gives them to the main thread (:mod:`fh_prefork.threads`).
* Without ``--master``, ``uwsgidecorators`` refuses to load; the raw
  ``uwsgi.post_fork_hook`` still runs in each worker.
* uWSGI runs no Python in its master, so nothing there can hear a worker die
  (gunicorn's ``child_exit``). A worker killed outright (SIGKILL, the OOM
  killer) never reaches ``atexit``; its Prometheus gauges and status record are
  removed by the workers' sweep instead (:func:`fh_prefork.prometheus.sweep_dead`,
  :func:`fh_prefork.status_records.sweep_records`): at the first export of the worker
  uWSGI respawns in its place, and every ten seconds in every worker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import runtime, serverlog
from .settings import SettingsError

log = logging.getLogger("fh_prefork")

try:
    import uwsgi as _uwsgi  # exists only inside a uWSGI process
except ImportError:
    _uwsgi = None

_FALSE = {b"", b"0", b"false", b"no", b"off", b"n", b"f"}
_installed = False


def _opt(name: str) -> Any:
    value = _uwsgi.opt.get(name) if _uwsgi is not None else None
    return value[-1] if isinstance(value, list) and value else value


def _flag(name: str) -> bool:
    """uwsgi.opt holds True for a CLI flag, raw bytes (b'true', b'0'...) for ini values."""
    value = _opt(name)
    if value is None or value is True or value is False:
        return bool(value)
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return raw.strip().lower() not in _FALSE


def _int(name: str, default: int) -> int:
    try:
        return int(_opt(name))
    except (TypeError, ValueError):
        return default


def option_problems() -> list[tuple[int, str]]:
    """Options whose absence breaks or weakens fh_prefork, as (log level, one line)."""
    if _uwsgi is None:
        return []
    problems: list[tuple[int, str]] = []
    if getattr(_uwsgi, "has_threads", 1) == 0 and _int("threads", 1) <= 1:
        problems.append((logging.ERROR, "fh_prefork: uWSGI has Python threads disabled, so the "
                         "refresh timer and the Edge connection cannot run: add enable-threads = "
                         "true (--enable-threads)"))
    if not _flag("master") and _int("processes", _int("workers", 1)) > 1:
        problems.append((logging.WARNING, "fh_prefork: uWSGI runs several workers without a "
                         "master; stopping it orphans workers: add master = true (--master)"))
    if not (_flag("lazy-apps") or _flag("lazy") or _flag("py-call-uwsgi-fork-hooks")):
        problems.append((logging.INFO, "fh_prefork: uWSGI forks without running "
                         "os.register_at_fork hooks; fh_prefork restarts each worker through "
                         "its post-fork hook, but add py-call-uwsgi-fork-hooks = true "
                         "(--py-call-uwsgi-fork-hooks) so other libraries' fork hooks run too"))
    return problems


#: What a uWSGI worker exits with when told to end (uWSGI's UWSGI_END_CODE, as its end_me).
END_CODE = 30
#: What a uWSGI master sends a worker to end it: SIGINT (stop, brutal reload), SIGHUP
#: (graceful reload). Until uWSGI installs the worker's own handlers, after the post-fork
#: hooks, a worker forked at start raises SIGINT as KeyboardInterrupt and ignores SIGHUP,
#: and a respawned one still runs the master's C handlers: either way the master then
#: waits worker-reload-mercy (10 s, 60 by default) before it kills the worker.
END_SIGNALS = (signal.SIGINT, signal.SIGHUP)


def _start() -> None:
    """Start in a worker's post-fork hook; a master's end signal met meanwhile ends it now."""
    if threading.current_thread() is not threading.main_thread():
        _start_worker()     # imported on another thread: only the main one may set handlers
        return
    previous = {sig: signal.getsignal(sig) for sig in END_SIGNALS}
    for sig in END_SIGNALS:
        signal.signal(sig, _told_to_end)
    try:
        _start_worker()
    except KeyboardInterrupt:
        _end_now()
    finally:
        for sig, handler in previous.items():
            # None: a handler set in C (a respawned worker's copy of the master's), which
            # is not the worker's to keep: the default until uWSGI installs the worker's own
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _told_to_end(signum: int, frame: Any) -> None:
    """Deaf to further end signals first, then KeyboardInterrupt: a terminal's Ctrl-C
    reaches the worker and then the master's copy, and a second interrupt landing before
    ``_end_now`` had set them aside left the worker to ``worker-reload-mercy`` (12 s, one
    run in six). Python drops a pending signal whose handler is ignored by then."""
    for sig in END_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _start_worker() -> None:
    try:
        runtime.start_worker(hooked="uWSGI post-fork hook")
    except Exception:  # a worker must come up even when FeatureHub cannot
        log.exception("fh_prefork: could not start in uWSGI worker %d", os.getpid())


def _end_now() -> None:
    """Close what started and exit as uWSGI's own handler would: at once (deaf to further
    end signals since :func:`_told_to_end`)."""
    try:
        log.info("fh_prefork: uWSGI worker %d told to stop while it started; it stops",
                 os.getpid())
        hook = getattr(_uwsgi, "atexit", None)
        if callable(hook):
            hook()          # ours (runtime.stop_worker) and the application's, chained
    finally:
        os._exit(END_CODE)


def _chain(attribute: str, first: Callable[[], None]) -> None:
    """Install ``first`` on a uwsgi hook attribute, keeping whatever was there."""
    previous = getattr(_uwsgi, attribute, None)

    def hook() -> None:
        first()
        if callable(previous):
            previous()

    setattr(_uwsgi, attribute, hook)


def install() -> bool:
    """Wire fh_prefork into this uWSGI process; safe to call more than once."""
    global _installed
    if _uwsgi is None or _installed:
        return False
    _installed = True
    routed = serverlog.route_to_stderr()
    for level, line in option_problems():
        log.log(level, "%s", line)
        if level >= logging.WARNING and not routed:  # the application's logging may drop it
            print(line, file=sys.stderr, flush=True)
    _chain("atexit", lambda: runtime.stop_worker())
    if _uwsgi.worker_id() > 0:  # lazy-apps, or imported late: the fork is behind us
        _start()
        return True
    runtime.mark_master()
    try:
        runtime.check()
    except SettingsError as err:
        print(f"fh_prefork: refusing to start: {err}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    if _uwsgi.masterpid() != 0:
        from uwsgidecorators import postfork  # shares uWSGI's post-fork chain with the app

        postfork(_start)
    else:
        _chain("post_fork_hook", _start)
    return True


install()

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
* A SIGINT that reaches a worker while its post-fork hooks run (the master
  stopping) is raised there as ``KeyboardInterrupt``: uWSGI prints it and the
  worker serves on until ``worker-reload-mercy``. Met in fh_prefork's hook, the
  worker closes what started and exits as uWSGI's own handler would.
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
import sys
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


def _start() -> None:
    try:
        runtime.start_worker(hooked="uWSGI post-fork hook")
    except KeyboardInterrupt:
        # SIGINT while the hook ran, before uWSGI's own handlers are in place: the master is
        # stopping its workers. Raised out of the hook, uWSGI prints it and the worker serves
        # on, deaf, until the master kills it after worker-reload-mercy (10 s and more)
        log.info("fh_prefork: uWSGI worker %d told to stop while it started; it stops",
                 os.getpid())
        runtime.stop_worker(timeout=1.0)
        os._exit(END_CODE)
    except Exception:  # a worker must come up even when FeatureHub cannot
        log.exception("fh_prefork: could not start in uWSGI worker %d", os.getpid())


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

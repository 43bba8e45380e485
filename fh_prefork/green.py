"""Green worker classes (gevent, eventlet): start fh_prefork only after they have patched.

gunicorn runs ``post_fork`` before the worker's ``init_process``, and a green
worker monkey-patches the standard library there, later. Started in
``post_fork``, the store and Edge threads would be native threads the hub
knows nothing of: each worker exit then prints ``KeyError`` tracebacks from
``threading`` and its shutdown waits on them. Started after the patch, both are
greenlets on the worker's hub, and their socket I/O yields to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GREEN_MODULES = ("gunicorn.workers.ggevent", "gunicorn.workers.geventlet")
_DEFERRED = "_fh_prefork_deferred"


def is_green(worker: Any) -> bool:
    """A gunicorn worker class that monkey-patches the standard library in ``init_process``."""
    return any(cls.__module__ in GREEN_MODULES for cls in type(worker).__mro__)


def defer_until_patched(worker: Any, start: Callable[[], None]) -> bool:
    """For a green worker not yet patched: run ``start`` once it has loaded the app.

    ``load_wsgi`` is called by ``init_process`` after the patch and before the
    worker serves. Returns True when the start was deferred (the caller returns),
    False when the caller should start now.
    """
    if not is_green(worker) or getattr(worker, _DEFERRED, False):
        return False
    load_wsgi = worker.load_wsgi

    def load_wsgi_then_start() -> None:
        load_wsgi()
        start()

    setattr(worker, _DEFERRED, True)
    worker.load_wsgi = load_wsgi_then_start
    return True

"""Fault injection for tests and the benchmark: stop or interleave a writer inside a store write.

The library has no fault points of its own: a test wraps a live store's
backend at one of two points, where a crash or a competing writer is most
dangerous, and the hook runs there (a rival write, or ``os.kill(os.getpid(),
SIGKILL)`` to die mid-write).

* ``before_write``: the data was read and merged, compare-and-set not yet sent;
* ``between_data_and_fingerprint``: the data is stored, the fingerprint key
  not yet set (memcached, Redis Cluster); on the embedded store, the data is
  about to replace the file while the writer holds the lock.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

POINTS = ("before_write", "between_data_and_fingerprint")


def inject(store: Any, point: str, hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` each time ``store``'s backend reaches ``point``; returns an undo function."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
    backend = store._backend
    if point == "before_write":
        return _wrap(backend, "write", lambda *a, **k: True, hook)
    if hasattr(backend, "channel") and hasattr(backend, "_call"):      # Redis (Cluster)
        # first: a Redis backend has _client and sha_key too, and its client is built lazily
        return _wrap(backend, "_call", lambda name, key=None, *a, **k:
                     name == "set" and key == backend.sha_key, hook)
    if hasattr(backend, "_client") and hasattr(backend, "sha_key"):  # memcached
        # the fingerprint's CAS token is read once the data landed, before it is set
        return _wrap(backend._client, "gets", lambda key, *a, **k: key == backend.sha_key, hook)
    if hasattr(backend, "_replace"):                                     # embedded store
        return _wrap(backend, "_replace", lambda path, *a, **k: path == backend.path, hook)
    raise ValueError(f"no {point} point on {type(backend).__name__}")


def kill_at(store: Any, point: str) -> None:
    """Make this process die with SIGKILL when ``store`` reaches ``point`` (crash tests)."""
    inject(store, point, lambda: os.kill(os.getpid(), signal.SIGKILL))


def _wrap(owner: Any, name: str, when: Callable[..., bool], hook: Callable[[], None]
          ) -> Callable[[], None]:
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            hook()
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)
    return lambda: setattr(owner, name, original)

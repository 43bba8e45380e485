"""Fault-injection points for tests: stop or interleave a writer between store operations.

Production code calls :func:`hit` at the points where a crash or a competing
writer is most dangerous. Nothing happens unless a test installed a hook, or
set ``FH_PREFORK_FAULT=<point>`` in a child process's environment, which makes
that process kill itself with SIGKILL when it reaches the point.

Points: ``before_write`` (data read, compare-and-set not yet sent) and
``between_data_and_fingerprint`` (data stored, fingerprint key not yet set).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

POINTS = ("before_write", "between_data_and_fingerprint")
ENV_VAR = "FH_PREFORK_FAULT"

_hooks: dict[str, Callable[[], None]] = {}


def install(point: str, hook: Callable[[], None] | None) -> None:
    """Run ``hook`` every time ``point`` is reached in this process (``None`` removes it)."""
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(POINTS)}")
    if hook is None:
        _hooks.pop(point, None)
    else:
        _hooks[point] = hook


def hit(point: str) -> None:
    """Called by the store at ``point``; a no-op unless a test asked for a fault."""
    hook = _hooks.get(point)
    if hook is not None:
        hook()
    if os.environ.get(ENV_VAR) == point:
        os.kill(os.getpid(), signal.SIGKILL)

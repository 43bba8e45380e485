"""Process helpers for tests: bounded waits that fail as assertions, ports, cleanup by pid."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Literal, TypeVar

from fh_prefork.testing.cluster import free_port, kill_tree

__all__ = ["free_port", "kill_tree", "port_open", "wait_for", "wait_quiet"]

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None | Literal[False]], timeout: float,
             interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``predicate`` until truthy; fail the test naming ``what`` after ``timeout`` s.

    Returns the truthy value, so its type drops the None and False that meant "not yet"
    (``wait_for(lambda: a and b, ...)`` is ``b``'s type).
    """
    deadline = time.monotonic() + timeout
    last = predicate()
    while not last:
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling interval of a bounded wait, not a fixed delay
        last = predicate()
    return last


def wait_quiet(read: Callable[[], T], quiet: float, timeout: float,
               what: str = "value") -> T:
    """Wait until ``read()`` has not changed for ``quiet`` s; fail after ``timeout`` s.

    For "nothing happens while idle" checks: late work from an earlier event
    (a notification's tick on a loaded machine) must end before idling starts.
    """
    deadline = time.monotonic() + timeout
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} still changing after {timeout} s (last {value!r})")
        time.sleep(0.02)  # polling interval of a bounded wait
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def hold_for(seconds: float) -> None:
    """Let ``seconds`` of wall time pass (bounded by definition): a period the store must
    survive, e.g. a verify period, before the state is checked again."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False

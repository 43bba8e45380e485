"""A clock a test steps instead of sleeping (for the in-memory store and its judges)."""

from __future__ import annotations

import threading
import time


class ManualClock:
    """``clock()`` reads it; only ``advance(seconds)`` moves it.

    It stands for both clocks the store judges by: the wall clock (the unix
    times stored with tombstones and absence proposals) and the monotonic one
    (the absence grace), so it reads as a unix time: by default a day behind
    the real one, since a stored time in the future is taken as now when read
    back (:func:`fh_prefork.tombstones.decode`), and a test advancing past the
    real time would meet that instead of what it tests. It counts whole
    milliseconds, the resolution the store keeps times at, so a time read here
    and the same time read back from the store compare equal.
    """

    def __init__(self, start: float | None = None) -> None:
        self._ms = round((time.time() - 86_400 if start is None else start) * 1000)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._ms / 1000

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` (rounded to the millisecond; never back)."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, not by {seconds} s")
        with self._lock:
            self._ms += round(seconds * 1000)
